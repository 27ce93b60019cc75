"""Schemathesis against the server's own /openapi.json: generated requests, valid and invalid, to every
operation of a real `dgx-music serve --transport http`. No response may be a server error, every response
must match its documented status, content type, headers and schema, and the server must be healthy after.

The default run is short; the slow run (``pytest -m slow``, run by .ci/run) sends well over 500 requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from mcp_testing import http_server, wait_healthy

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)


def no_server_error(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """not_a_server_error, except the one deliberate 5xx: a full queue refused with 503 and Retry-After."""
    if response.status_code == 503 and "retry-after" in {key.lower() for key in response.headers}:
        assert case.path == "/api/v1/generate", case.path
        return True
    return not_a_server_error(ctx, response, case)  # type: ignore[arg-type]


CHECKS = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def server(tiny_checkpoint: Path, tmp_path: Path) -> Iterator[str]:
    # A short queue, so the fuzzer also meets the full-queue refusal while generated jobs run; models it
    # names that are not in the cache fail at once instead of trying the network.
    home = tmp_path / "home"
    with http_server(home, tiny_checkpoint, DGX_MUSIC_MAX_QUEUE="6", HF_HUB_OFFLINE="1") as (url, _):
        wait_healthy(url)
        yield url


def fuzz(url: str, examples: int) -> int:
    """``examples`` valid and ``examples`` invalid cases per operation; returns the requests sent."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first failure as it came
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: schemathesis.Case) -> None:
                nonlocal sent
                response = case.call(base_url=url, timeout=60)
                sent += 1
                case.validate_response(response, checks=CHECKS)

            try:
                call()
            except Unsatisfiable:  # no invalid request exists for an operation without parameters
                assert mode is GenerationMode.NEGATIVE and not operation.path_parameters, operation.label
    return sent


def assert_alive(url: str) -> None:
    health = httpx.get(url + "/health", timeout=30)
    assert health.status_code == 200, health.text
    generated = httpx.post(
        url + "/api/v1/generate", json={"prompt": "still alive", "duration": 1}, timeout=30
    )
    if generated.status_code == 503:  # the fuzzer's jobs still fill the short queue: it says so, alive
        assert generated.headers["retry-after"]
        return
    assert generated.status_code == 202, generated.text


def test_generated_requests_get_documented_answers(server: str) -> None:
    sent = fuzz(server, examples=4)
    assert sent >= 50
    assert_alive(server)


@pytest.mark.slow
def test_500_generated_requests_no_server_error(server: str) -> None:
    sent = fuzz(server, examples=30)
    print(f"\nschemathesis: {sent} requests, 0 failures")
    assert sent >= 500
    assert_alive(server)
