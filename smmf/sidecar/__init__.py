"""The sidecar: registers a worker in the registry under a lease and keeps its record true."""
