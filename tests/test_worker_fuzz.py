"""The worker's API under `schemathesis`: generated from its own OpenAPI document, valid and invalid bodies alike.

Issue 12: of 291 hand-picked cases, 12 got a 500 with a traceback.  Here
the fuzzer generates the cases from `/openapi.json` (which the worker builds
from the pydantic models that validate its requests), and no answer may be
a 5xx, no traceback may reach the log, and the worker's memory stays
bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.support.processes import SmmfProcess

#: Growth of the worker's resident memory the whole fuzz run may cause.
MEMORY_BOUND_KB = 200 * 1024


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SmmfProcess, int]]:
    args = ["worker", "sim", "--model", "fuzz", "--port", "0", "--ttft-ms", "0", "--tpot-ms", "0"]
    worker = SmmfProcess([*args, "--max-tokens-limit", "64"], tmp_path_factory.mktemp("fuzz"))
    try:
        worker.start().wait_healthy()
        yield worker, rss_kb(worker.pid)
    finally:
        worker.stop()


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_no_generated_request_gets_a_5xx(fuzzed: tuple[SmmfProcess, int], mode: GenerationMode) -> None:
    """Every operation, with bodies that fit the schema (positive) and bodies that break it (negative).

    The strategies are driven by hand rather than by schemathesis's pytest
    plugin, whose `from_fixture` fails under pytest 9 (`'Function' object
    has no attribute '_nodeid'`).
    """
    worker = fuzzed[0]
    schema = schemathesis.openapi.from_url(f"{worker.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/chat/completions", "POST /v1/completions"}
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
            continue  # nothing to break: these take no input

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_5xx(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=worker.url, checks=[not_a_server_error])

        no_5xx()


def test_the_fuzzed_worker_logged_no_traceback_and_kept_its_memory(fuzzed: tuple[SmmfProcess, int]) -> None:
    worker, rss_before = fuzzed
    assert "Traceback" not in worker.log()
    assert rss_kb(worker.pid) - rss_before < MEMORY_BOUND_KB
