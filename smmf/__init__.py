"""smmf: service-oriented multi-model management.

Workers run beside sidecars that register leased instance records in a
registry; callers embed a client that watches the registry and balances each
request itself.  `docs/design.md` in the repository is the map of the
packages: one per role (registry, worker, sidecar, client), over a few
shared modules (the record, the error tree, the OpenAI wire format).
"""

__version__ = "0.1.0"
