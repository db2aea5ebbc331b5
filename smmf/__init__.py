"""smmf: service-oriented multi-model management.

Workers run beside sidecars that register leased instance records in a
registry; callers embed a client that watches the registry and balances each
request itself.  See DESIGN.md for the map of the packages.
"""

__version__ = "0.1.0"
