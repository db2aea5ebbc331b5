"""The client library: watched instance cache, client-side balancing, failover."""
