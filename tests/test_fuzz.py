"""Property-based fuzzing of every tool and resource through a real MCP client session.

Whatever the arguments — wrong types, extremes, huge and unicode strings, NaN/Infinity, unknown ids, path-like
names, unknown keys — each call must end, within a bound, in a valid result or a deliberate tool error: never
a crash inside a handler (the SDK then says only "Error executing tool NAME" and logs a traceback), never a
hung call, and the server answers a normal call afterwards. The in-process session (``Client(app)`` on the
real server, service, store and tiny model) carries the volume; a short subprocess stdio run, and raw
JSON-RPC lines with NaN/Infinity literals (which no JSON encoder sends), check the real process.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.client import ConnectMode
from mcp.shared.dispatcher import ProgressFnT
from mcp_testing import DGX_MUSIC, server_env, structured
from pydantic import BaseModel
from reliability_helpers import RawStdio, crash_lines, crash_records, is_crash, snapshot_tree, tool_text

from ardour_templates import SessionManifest
from mcp_server.config import Settings
from mcp_server.schemas import GenerateResult, HistoryPage, Job
from mcp_server.server import build_server
from mcp_server.service import JobService

CALL_TIMEOUT = 20.0  # seconds; every fuzzed call must end well within this
FAST_CASES = 100
SLOW_CASES = 1_000
STDIO_CASES = 25
MAX_QUEUE = 3  # generation is fuzzed too: a tiny queue keeps it cheap, and "queue is full" is a tool error
RESULT_MODELS: dict[str, type[BaseModel]] = {
    "generate_music": GenerateResult,
    "extend_music": GenerateResult,
    "job_status": Job,
    "cancel_job": Job,
    "list_history": HistoryPage,
    "export_to_ardour": SessionManifest,
}

REQUIRED = {
    "generate_music": ["prompt"],
    "extend_music": ["job_id", "seconds"],
    "job_status": ["job_id"],
    "cancel_job": ["job_id"],
    "list_history": [],
    "export_to_ardour": ["job_ids", "session_name"],
}

# --- strategies -------------------------------------------------------------------------------------------

PATH_LIKE = [
    "..",
    "../../../../etc/passwd",
    "/etc/passwd",
    "/tmp",
    "~",
    "~root/.ssh",
    "a/../../b",
    "..\\..\\windows",
    "C:\\Windows",
    "\x00",
    "sessions/../../escape",
    "%2e%2e%2f%2e%2e%2f",
    "file:///etc/passwd",
    ".hidden",
    " ",
    "con",
    "\u202etxt.exe",
]
text = st.text(st.characters(codec="utf-8"), max_size=40)  # lone surrogates are not JSON
huge = st.integers(1_000, 300_000).flatmap(
    lambda n: st.sampled_from(["x" * n, "𝄞" * (n // 4), "é" * n, "\x1b[31m" * (n // 5), " " * n])
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -0.0, -1, 1e308, -1e308, 5e-324, 2**31, 2**32, 2**63, 2**64, 1e-9]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text, huge, st.sampled_from(PATH_LIKE))
hostile = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(text, scalars, max_size=3),
    st.lists(st.lists(scalars, max_size=2), max_size=2),
)


@dataclass(frozen=True)
class KnownId:
    """Stands for the n-th real job id (0 = the completed one), looked up when the call is made: a strategy
    must not depend on state that changes between examples, or hypothesis cannot replay it."""

    n: int


@dataclass
class Known:
    """Ids the session has seen, so fuzzed ids are sometimes real ones."""

    completed: str
    ids: list[str] = field(default_factory=list)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, KnownId):
            real = [self.completed, *self.ids[-20:]]
            return real[value.n % len(real)]
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        return value


known_ids = st.integers(0, 20).map(KnownId)
job_ids = st.one_of(known_ids, st.uuids().map(str), st.sampled_from(PATH_LIKE), hostile)


def valid_arguments() -> dict[str, dict[str, st.SearchStrategy[Any]]]:
    """Per tool, per argument: values inside the documented range, its edges included. Generation never
    waits (fuzz_call sets wait_seconds 0) and other waits stay short, so every call is cheap."""
    return {
        "generate_music": {
            "prompt": st.sampled_from(["calm piano", "🎹 lo-fi, 80 bpm", "a" * 2000]),
            "duration": st.sampled_from([1, 1.0, 30]),
            "seed": st.sampled_from([0, 2**32 - 1, None]),
            "temperature": st.sampled_from([1e-9, 2.0]),
            "top_k": st.sampled_from([0, 2048]),
            "top_p": st.sampled_from([0.0, 1.0]),
            "guidance_scale": st.sampled_from([0.0, 10.0]),
            "variations": st.sampled_from([1, 4]),
            "loudness_lufs": st.sampled_from([None, -40, -6]),
            "context_seconds": st.sampled_from([2, 20]),
            "continue_from": st.one_of(st.sampled_from([None, "missing.wav", "../x.wav"]), known_ids),
            "model": st.sampled_from([None, "no-such/model", "/nonexistent"]),  # fail in the worker
        },
        "extend_music": {
            "job_id": job_ids,
            "seconds": st.sampled_from([1, 1.5]),
            "prompt": st.sampled_from([None, "more of it", "a" * 2000]),
        },
        "job_status": {"job_id": job_ids, "wait_seconds": st.floats(0, 0.2)},
        "list_history": {
            "query": st.sampled_from([None, "piano", '"unbalanced', "AND OR NOT", "pia*", "NEAR(", "*"]),
            "status": st.sampled_from([None, "completed", "pending", "cancelled"]),
            "limit": st.sampled_from([1, 100]),
            "cursor": st.sampled_from([None, "", "bm90LWEtY3Vyc29y", "eyJhIjoxfQ=="]),
        },
        "export_to_ardour": {
            "job_ids": st.one_of(st.just([KnownId(0)]), st.lists(job_ids, max_size=3)),
            "session_name": st.sampled_from([*PATH_LIKE, "song", "a" * 100]),
            "arrangement": st.sampled_from(["sequential", "stacked"]),
            "gap_seconds": st.sampled_from([0, 60]),
            "bpm": st.sampled_from([None, 20, 300]),
            "enable_osc": st.booleans(),
        },
        "cancel_job": {"job_id": job_ids},
    }


# Just outside each documented range.
EDGES: dict[str, list[Any]] = {
    "prompt": ["a" * 2001, "", " \n\t"],
    "duration": [0.999, 300.001],
    "context_seconds": [1.999, 20.001],
    "seconds": [0.999, 300.001],
    "continue_from": ["", "../../etc/passwd", "data:audio/wav;base64,AAAA"],
    "seed": [2**32, -1],
    "temperature": [0.0, 2.0001],
    "top_k": [2049, -1],
    "top_p": [1.01, -0.01],
    "guidance_scale": [10.5, -0.1],
    "variations": [0, 5],
    "loudness_lufs": [-5.9, -40.1],
    "model": ["", "x" * 501],
    "status": ["done", "COMPLETED"],
    "limit": [0, 101],
    "session_name": ["a" * 101, ""],
    "arrangement": ["explicit", "Sequential"],
    "gap_seconds": [-1, 61],
    "bpm": [19, 301],
}


@st.composite
def tool_calls(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A tool and any subset of its arguments. One call in four sticks to valid values (so the success paths
    run too); the rest mix in values just out of range, hostile values and, sometimes, an unknown key."""
    per_tool = valid_arguments()
    tool = draw(st.sampled_from(sorted(per_tool)))
    plausible = draw(st.integers(0, 3)) == 0
    names = draw(st.lists(st.sampled_from(sorted(per_tool[tool])), unique=True))
    if plausible:
        names = sorted({*names, *REQUIRED[tool]})
    arguments = {}
    for name in names:
        valid = per_tool[tool][name]
        wild = st.one_of(valid, st.sampled_from(EDGES.get(name, [None])), hostile)
        arguments[name] = draw(valid if plausible else wild)
    if not plausible and draw(st.integers(0, 3)) == 0:
        arguments[draw(text)] = draw(scalars)
    return tool, arguments


resource_uris = st.tuples(
    st.one_of(known_ids, st.uuids().map(str), st.sampled_from(PATH_LIKE), text),
    st.sampled_from(["", "/audio", "/audio/..", "/../.."]),
)


# --- the in-process session -------------------------------------------------------------------------------


@dataclass
class Session:
    portal: BlockingPortal
    clients: list[Client]  # one per protocol mode; each case picks one
    home: Path
    known: Known
    tally: Counter[str] = field(default_factory=Counter)

    @property
    def client(self) -> Client:
        return self.clients[0]


@contextmanager
def open_session(server: Any, home: Path, modes: tuple[ConnectMode, ...] = ("auto",)) -> Iterator[Session]:
    """Client sessions on ``server`` (an MCPServer or StdioServerParameters), one per protocol mode, whose
    event loop lives in a portal thread so hypothesis can drive them from plain (sync) test functions; one
    completed job to start with."""
    with start_blocking_portal() as portal, ExitStack() as stack:
        clients = [
            stack.enter_context(portal.wrap_async_context_manager(Client(server, mode=mode)))
            for mode in modes
        ]
        arguments = {"prompt": "fuzz seed clip", "duration": 1, "wait_seconds": 120}
        [job] = structured(portal.call(clients[0].call_tool, "generate_music", arguments))["jobs"]
        assert job["status"] == "completed", job
        yield Session(portal, clients, home, Known(completed=job["job_id"]))


@pytest.fixture(scope="module")
def session(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """The real server in-process: fast enough for a thousand cases."""
    home = tmp_path_factory.mktemp("fuzz") / "home"
    config = Settings.load({}, home=home, model=str(tiny_checkpoint), device="cpu", max_queue=MAX_QUEUE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")  # fuzzed model names must never reach for the network
        with (
            JobService(config) as service,
            open_session(build_server(service), home, ("auto", "legacy")) as opened,
        ):
            yield opened


async def fuzz_call(
    session: Session, client: Client, tool: str, arguments: dict[str, Any], with_progress: bool
) -> None:
    arguments = {name: session.known.resolve(value) for name, value in arguments.items()}
    if tool in ("generate_music", "extend_music"):
        arguments = {**arguments, "wait_seconds": 0}
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    callback: ProgressFnT | None = on_progress if with_progress else None
    with anyio.fail_after(CALL_TIMEOUT):
        result = await client.call_tool(tool, arguments, progress_callback=callback)
    assert not is_crash(result, tool), (tool, arguments, tool_text(result))
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    if result.is_error:
        assert tool_text(result).strip(), "a tool error must say what is wrong"
        session.tally[f"{tool} error"] += 1
        return
    session.tally[f"{tool} ok"] += 1
    RESULT_MODELS[tool].model_validate(result.structured_content)
    if tool in ("generate_music", "extend_music"):
        # Keep the worker idle: the fuzzer is testing the door, not the engine.
        for job in structured(result)["jobs"]:
            session.known.ids.append(job["job_id"])
            with anyio.fail_after(CALL_TIMEOUT):
                await session.client.call_tool("cancel_job", {"job_id": job["job_id"]})
    if tool == "export_to_ardour":
        manifest = SessionManifest.model_validate(result.structured_content)
        assert Path(manifest.session_dir).resolve().parent == (session.home / "sessions").resolve()


async def fuzz_read(session: Session, client: Client, job_id: KnownId | str, suffix: str) -> None:
    uri = f"music://generations/{session.known.resolve(job_id)}{suffix}"
    try:
        with anyio.fail_after(CALL_TIMEOUT):
            result = await client.read_resource(uri, cache_mode="bypass")
    except MCPError as exc:  # a JSON-RPC error is the resource equivalent of a tool error
        assert exc.error.message.strip(), uri
        session.tally["resource error"] += 1
        return
    assert result.contents, uri
    session.tally["resource ok"] += 1


async def still_serving(session: Session) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        page = structured(await session.client.call_tool("list_history", {"limit": 1}))
    assert len(page["items"]) == 1


def run_fuzz(session: Session, cases: int) -> None:
    before = outside_tree(session.home)
    tally_before = session.tally.copy()

    @settings(
        max_examples=cases,
        deadline=None,
        derandomize=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(data=st.data())
    def case(data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(session.clients))
        with crash_records() as crashes:
            if data.draw(st.integers(0, 5)) == 0:
                session.portal.call(fuzz_read, session, client, *data.draw(resource_uris))
            else:
                tool, arguments = data.draw(tool_calls())
                session.portal.call(fuzz_call, session, client, tool, arguments, data.draw(st.booleans()))
            session.portal.call(still_serving, session)
        assert not crashes.messages(), crashes.messages()

    case()
    outcomes = session.tally - tally_before
    ran = sum(outcomes.values())
    assert ran >= cases * 0.9, f"only {ran} of {cases} cases ran"
    assert outside_tree(session.home) == before, "fuzzing changed files next to the data directory"
    print(f"fuzz cases run: {ran}; outcomes {dict(outcomes)}")


def outside_tree(home: Path) -> dict[str, tuple[int, int]]:
    """Everything beside the data directory (where ../ names would land), for a before/after comparison."""
    return {
        name: facts for name, facts in snapshot_tree(home.parent).items() if name.split("/")[0] != home.name
    }


def test_fuzz_tools_and_resources(session: Session) -> None:
    run_fuzz(session, FAST_CASES)


@pytest.mark.slow
def test_fuzz_tools_and_resources_thousand_cases(session: Session) -> None:
    run_fuzz(session, SLOW_CASES)


def test_fuzz_over_stdio_subprocess(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The same properties against `dgx-music serve` over stdio, where a stray print or a crash would break
    the protocol stream; the server's own log must show no traceback."""
    home = tmp_path / "home"
    env = server_env(home, tiny_checkpoint, DGX_MUSIC_MAX_QUEUE=str(MAX_QUEUE), HF_HUB_OFFLINE="1")
    with open_session(StdioServerParameters(command=DGX_MUSIC, args=["serve"], env=env), home) as opened:
        run_fuzz(opened, STDIO_CASES)
    assert not crash_lines((home / "logs" / "server.log").read_text())


def test_non_finite_json_literals_and_garbage_over_stdio(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """NaN, Infinity and -Infinity are not JSON, but Python's json module reads them; no client library sends
    them, so they are written by hand. Each gets an error answer, a malformed line gets none, and the next
    normal call still works."""
    env = server_env(tmp_path / "home", tiny_checkpoint, HF_HUB_OFFLINE="1")
    with RawStdio([DGX_MUSIC, "serve"], env) as server:
        server.initialize()
        cases = [
            ("generate_music", '{"prompt": "x", "duration": NaN, "wait_seconds": 0}'),
            ("generate_music", '{"prompt": "x", "duration": 1, "temperature": Infinity, "wait_seconds": 0}'),
            (
                "generate_music",
                '{"prompt": "x", "duration": 1, "loudness_lufs": -Infinity, "wait_seconds": 0}',
            ),
            ("generate_music", '{"prompt": "x", "duration": 1, "wait_seconds": NaN}'),
            ("job_status", '{"job_id": "x", "wait_seconds": Infinity}'),
            ("list_history", '{"limit": NaN}'),
            ("export_to_ardour", '{"job_ids": ["x"], "session_name": "s", "gap_seconds": NaN}'),
            ("export_to_ardour", '{"job_ids": ["x"], "session_name": "s", "bpm": Infinity}'),
        ]
        for number, (tool, arguments) in enumerate(cases, start=10):
            server.send_raw(
                f'{{"jsonrpc": "2.0", "id": {number}, "method": "tools/call", '
                f'"params": {{"name": "{tool}", "arguments": {arguments}}}}}'
            )
            answer = server.receive(number)
            result = answer.get("result", {})
            assert "error" in answer or result.get("isError") is True, (tool, arguments, answer)
            text = json.dumps(answer)
            assert f'Error executing tool {tool}"' not in text, (tool, arguments, answer)
        server.send_raw('{"jsonrpc": "2.0", "id": 98, "method": "tools/call", "params": {"name": ')
        server.send_raw(b"\xff\xfe not json at all")
        server.send(
            {
                "jsonrpc": "2.0",
                "id": 99,
                "method": "tools/call",
                "params": {"name": "list_history", "arguments": {"limit": 1}},
            }
        )
        assert server.receive(99)["result"]["isError"] is False
