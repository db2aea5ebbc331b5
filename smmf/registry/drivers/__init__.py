"""Registry backends, one module each, all under the `Store` seam; `urls.py` imports each only when named."""
