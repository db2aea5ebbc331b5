"""What the tests and benchmarks share: real processes (etcd, smmf workers and sidecars) and small helpers.

etcd.py          real etcd members and clusters on free loopback ports
processes.py     `smmf ...` as OS processes, stopped by PID, and the run's process reaper
fleet.py         sim workers behind real sidecars, registered in a real registry
helpers.py       records, polling with a deadline, watch mirrors
upstream_app.py  a small third-party API for the proxy and template tests
registrant.py    a separate process that holds one lease
"""
