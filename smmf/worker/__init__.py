"""Model workers: an OpenAI-compatible HTTP server over pluggable backends; knows nothing of registries."""
