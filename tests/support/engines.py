"""Time limits for the tests that start real engines, from measured cold starts.

A limit shorter than a cold start on a slow machine is a speed assertion,
so each comes from a measurement: every engine started with every cache
empty (`python -m bench.cold_start`, see `bench/README.md`), from its
command to a healthy server, on the 2-core development machine with nothing
else running:

    llama-cpp      2.5 s   assembles the bundled GGUF, loads it
    embedding      9.3 s   loads MiniLM with sentence-transformers
    vllm-worker  403.4 s   assembles and converts the bundled Gemma, starts vLLM in the worker
    vllm-server  417.5 s   converts the bundled Gemma (126.0 s), starts a plain vLLM server (291.4 s)

A start may take three times its cold start, and never less than two
minutes (the rest of the suite shares the two cores).  A test may take its
engine's start plus what it does once the engine is up.
"""

from __future__ import annotations

__all__ = ["COLD_START", "run_limit", "start_limit"]

#: Seconds from command to healthy with empty caches, as measured above.
COLD_START = {"llama-cpp": 2.5, "embedding": 9.3, "vllm-worker": 403.4, "vllm-server": 417.5}

#: What a test may spend once its engine is up: pytest's default limit for every other test.
WORK = 180.0


def start_limit(engine: str) -> float:
    """Seconds an engine may take to become healthy."""
    return max(120.0, 3 * COLD_START[engine])


def run_limit(engine: str) -> float:
    """Seconds a test that starts `engine` (in it, or in its module's fixture) may take in all."""
    return start_limit(engine) + WORK
