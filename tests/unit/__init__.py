"""Fast tests of the pure parts: no processes, no network; the registry is the in-memory driver."""
