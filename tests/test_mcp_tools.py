"""The tools and resources through the official MCP client, connected in-process to a running job service.

The server, service, store, engine (tiny random checkpoint) and Ardour are all real; only the transport is
in memory. Subprocess transports are covered in test_mcp_transports.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_testing import decode_wav, error_text, structured, waited_jobs
from mcp_types import INVALID_PARAMS, ResourceLink
from sqlalchemy import insert

from ardour_templates.verify import find_tool, inspect_session
from mcp_server.config import Settings
from mcp_server.music_server import RECENT_AUDIO_RESOURCES
from mcp_server.server import build_server
from mcp_server.service import JobService
from storage.models import GenerationRow

pytestmark = pytest.mark.anyio


def make_settings(home: Path, checkpoint: Path | str, **overrides: Any) -> Settings:
    return Settings.load({}, home=home, model=str(checkpoint), device="cpu", **overrides)


@pytest.fixture(scope="module")
def service(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobService]:
    with JobService(make_settings(tmp_path_factory.mktemp("home"), tiny_checkpoint)) as running:
        yield running


@pytest.fixture(params=["auto", "legacy"])
async def client(request: pytest.FixtureRequest, service: JobService) -> Any:
    """Both protocol modes: 2026-07-28 (the default) and the initialize handshake Claude Desktop speaks."""
    async with Client(build_server(service), mode=request.param) as connected:
        yield connected


async def generate(client: Client, prompt: str, **args: Any) -> list[dict[str, Any]]:
    result = await client.call_tool("generate_music", {"prompt": prompt, "duration": 1, **args})
    return list(waited_jobs(result)["jobs"])


async def wait_until(client: Client, job_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = structured(await client.call_tool("job_status", {"job_id": job_id}))
        if job["status"] == status:
            return job
        await anyio.sleep(0.05)
    raise AssertionError(f"job {job_id} never became {status}: {job}")


async def test_tools_publish_schemas_and_truthful_annotations(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {
        "generate_music", "extend_music", "job_status", "list_history", "export_to_ardour", "cancel_job",
        "edit_music", "remix", "separate_stems", "delete_generation",
    }  # fmt: skip
    generate_schema = tools["generate_music"].input_schema["properties"]
    assert "minimum" in json.dumps(generate_schema["duration"]) and "600" in json.dumps(generate_schema)
    assert "ACE-Step only" in generate_schema["lyrics"]["description"]
    [context, _null] = generate_schema["context_seconds"]["anyOf"]  # null = MusicGen's default (10 s)
    assert (context["minimum"], context["maximum"]) == (2, 20)
    assert "job_id" in generate_schema["continue_from"]["description"]
    extend_schema = tools["extend_music"].input_schema
    assert extend_schema["required"] == ["job_id", "seconds"]
    assert extend_schema["properties"]["seconds"]["maximum"] == 300
    assert generate_schema["variations"]["maximum"] == 4 and generate_schema["wait_seconds"]["maximum"] == 300
    assert tools["generate_music"].input_schema["required"] == ["prompt"]
    assert "jobs" in tools["generate_music"].output_schema["properties"]  # type: ignore[index]
    assert "queue_position" in json.dumps(tools["job_status"].output_schema)
    assert tools["list_history"].annotations.read_only_hint is True  # type: ignore[union-attr]
    assert tools["job_status"].annotations.read_only_hint is True  # type: ignore[union-attr]
    assert tools["generate_music"].annotations.read_only_hint is False  # type: ignore[union-attr]
    assert tools["cancel_job"].annotations.destructive_hint is True  # type: ignore[union-attr]
    assert all(tool.description and len(tool.description) > 80 for tool in tools.values())


async def test_generate_waits_sends_progress_and_links_the_audio(client: Client) -> None:
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    result = await client.call_tool(
        "generate_music",
        {"prompt": "bright marimba loop", "duration": 1, "seed": 7, "variations": 2},
        progress_callback=on_progress,
    )
    jobs = structured(result)["jobs"]
    assert [job["status"] for job in jobs] == ["completed", "completed"]
    assert [job["params"]["seed"] for job in jobs] == [7, 8]
    assert all(job["progress"] == 1.0 and job["audio"]["duration_s"] == 1.0 for job in jobs)
    assert jobs[0]["audio"]["sha256"] != jobs[1]["audio"]["sha256"]
    links = [block for block in result.content if isinstance(block, ResourceLink)]
    assert sorted(str(link.uri) for link in links) == sorted(job["audio"]["uri"] for job in jobs)

    assert len(updates) >= 2
    done = [progress for progress, _, _ in updates]
    assert done == sorted(done), "progress must never go backwards"
    assert updates[-1][0] == updates[-1][1] and "2/2 finished" in str(updates[-1][2])


async def test_job_status_long_polls_until_the_job_ends(client: Client) -> None:
    [job] = await generate(client, "slow cello drone", duration=3, wait_seconds=0)
    assert job["status"] in ("pending", "processing") and job["audio"] is None
    started = time.monotonic()
    result = structured(await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 60}))
    assert result["status"] == "completed" and result["audio"]["duration_s"] == 3.0
    assert time.monotonic() - started < 30  # returned when the job ended, not when the wait ran out

    started = time.monotonic()
    unchanged = structured(
        await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 60})
    )
    assert unchanged == result and time.monotonic() - started < 2  # an ended job answers at once


async def test_list_history_searches_filters_and_pages(client: Client) -> None:
    tag = f"zebra{time.monotonic_ns()}"
    for word in ("harp", "banjo", "oboe"):
        await generate(client, f"{tag} {word} melody", wait_seconds=30)

    first = structured(await client.call_tool("list_history", {"query": tag, "limit": 2}))
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = structured(
        await client.call_tool("list_history", {"query": tag, "limit": 2, "cursor": first["next_cursor"]})
    )
    prompts = [item["prompt"] for item in first["items"] + second["items"]]
    assert sorted(prompts) == sorted(f"{tag} {word} melody" for word in ("harp", "banjo", "oboe"))
    assert second["next_cursor"] is None

    banjo = structured(await client.call_tool("list_history", {"query": f"{tag} banjo"}))
    assert banjo["items"][0]["prompt"] == f"{tag} banjo melody"  # best match first
    completed = structured(await client.call_tool("list_history", {"status": "completed", "limit": 100}))
    assert completed["items"] and all(item["status"] == "completed" for item in completed["items"])


async def test_unicode_prompts_round_trip(client: Client) -> None:
    prompt = "夏祭りの太鼓 🎵 «fête» \u202eRTL\u202c ümlaut"
    [job] = await generate(client, prompt)
    assert job["status"] == "completed" and job["prompt"] == prompt
    found = structured(await client.call_tool("list_history", {"query": "ümlaut"}))
    assert job["job_id"] in [item["job_id"] for item in found["items"]]


async def test_resources_return_the_job_and_its_wav(client: Client) -> None:
    [job] = await generate(client, "warm rhodes chords", loudness_lufs=-20)
    uri = job["audio"]["uri"]
    assert uri == f"music://generations/{job['job_id']}/audio"

    as_json = await client.read_resource(f"music://generations/{job['job_id']}")
    assert json.loads(as_json.contents[0].text) == job  # type: ignore[union-attr]

    samples, rate = decode_wav((await client.read_resource(uri)).contents)
    assert rate == job["audio"]["sample_rate"] and samples.shape == (rate * 1, job["audio"]["channels"])
    assert 0 < abs(samples).max() <= 1.0


async def test_unknown_resource_is_a_not_found_error(client: Client) -> None:
    from mcp.shared.exceptions import MCPError

    with pytest.raises(MCPError, match="not found"):
        await client.read_resource("music://generations/no-such-job/audio")


async def test_cancel_stops_a_running_job(client: Client) -> None:
    [job] = await generate(client, "long ambient pad", duration=30, wait_seconds=0)
    await wait_until(client, job["job_id"], "processing")
    cancelled = structured(await client.call_tool("cancel_job", {"job_id": job["job_id"]}))
    assert cancelled["status"] == "cancelled"
    final = structured(await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 10}))
    assert final["status"] == "cancelled" and final["audio"] is None
    again = structured(await client.call_tool("cancel_job", {"job_id": job["job_id"]}))
    assert again["status"] == "cancelled"

    [done] = await generate(client, "short click")
    refused = await client.call_tool("cancel_job", {"job_id": done["job_id"]})
    assert "already completed" in error_text(refused)


async def test_four_clients_generate_at_once(service: JobService) -> None:
    results: dict[int, list[dict[str, Any]]] = {}

    async def one(index: int) -> None:
        async with Client(build_server(service)) as own:
            results[index] = await generate(own, f"client {index} groove", seed=index)

    async with anyio.create_task_group() as group:
        for index in range(4):
            group.start_soon(one, index)
    assert sorted(results) == [0, 1, 2, 3]
    jobs = [jobs[0] for jobs in results.values()]
    assert all(job["status"] == "completed" for job in jobs)
    assert len({job["audio"]["path"] for job in jobs}) == 4


async def test_export_to_ardour_writes_a_session_ardour_loads(service: JobService) -> None:
    find_tool("lua")  # the test needs Ardour's headless Lua host
    async with Client(build_server(service), mode="legacy") as client:
        jobs = await generate(client, "dusty boom bap drums", seed=11, variations=2)
        arguments = {"job_ids": [job["job_id"] for job in jobs], "session_name": "beat tape", "bpm": 90}
        result = await client.call_tool("export_to_ardour", {**arguments, "gap_seconds": 0.5})
    manifest = structured(result)
    session_dir = Path(manifest["session_dir"])
    assert session_dir.parent == service.settings.sessions_dir
    assert [track["strip_id"] for track in manifest["tracks"]] == [1, 2]
    assert manifest["open_command"]

    view = await anyio.to_thread.run_sync(lambda: inspect_session(Path(manifest["ardour_file"])))
    assert len(view.tracks) == 2 and view.bpm == 90
    assert all(track.name.startswith("dusty boom bap drums") for track in view.tracks)
    assert all(
        "dusty boom bap drums" in track.comment and '"seed": ' in track.comment for track in view.tracks
    )
    assert all(track.regions and track.regions[0].peak > 0 for track in view.tracks)


async def test_export_refuses_jobs_that_are_not_completed(client: Client) -> None:
    [pending] = await generate(client, "unfinished strings", duration=20, wait_seconds=0)
    result = await client.call_tool(
        "export_to_ardour", {"job_ids": [pending["job_id"]], "session_name": "not yet"}
    )
    assert pending["job_id"] in error_text(result) and "not completed" in error_text(result)
    await client.call_tool("cancel_job", {"job_id": pending["job_id"]})


BAD_INPUTS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("generate_music", {"prompt": "   "}, ["prompt", "not blank"]),
    ("generate_music", {"prompt": ""}, ["prompt", "1-2,000 characters"]),
    ("generate_music", {"prompt": "x" * 2001}, ["prompt", "2,000"]),
    ("generate_music", {"prompt": "ok", "duration": 0}, ["duration", "[1, 300]"]),
    ("generate_music", {"prompt": "ok", "duration": 301}, ["duration", "[1, 300]"]),
    ("generate_music", {"prompt": "ok", "duration": "long"}, ["duration", "number"]),
    ("generate_music", {"prompt": "ok", "temperature": 0}, ["temperature", "(0, 2]"]),
    ("generate_music", {"prompt": "ok", "top_k": -1}, ["top_k", "[0, 2048]"]),
    ("generate_music", {"prompt": "ok", "top_p": 1.5}, ["top_p", "[0, 1]"]),
    ("generate_music", {"prompt": "ok", "guidance_scale": 11}, ["guidance_scale", "[0, 10]"]),
    ("generate_music", {"prompt": "ok", "seed": -1}, ["seed", "[0, 4294967295]"]),
    ("generate_music", {"prompt": "ok", "seed": 2**40}, ["seed", "4294967295"]),
    ("generate_music", {"prompt": "ok", "loudness_lufs": 0}, ["loudness_lufs", "[-40, -6]"]),
    ("generate_music", {"prompt": "ok", "variations": 5}, ["variations must be in [1, 4] (got 5)"]),
    ("generate_music", {"prompt": "ok", "wait_seconds": -1}, ["wait_seconds must be in [0, 300] (got -1)"]),
    ("generate_music", {"prompt": "ok", "wait_seconds": 301}, ["wait_seconds must be in [0, 300]"]),
    ("generate_music", {"prompt": "ok", "model": ""}, ["model must be 1-500 characters"]),
    ("generate_music", {"duration": 5}, ["prompt is required"]),
    ("generate_music", {"prompt": ["a", "list"]}, ["prompt", "string"]),
    ("job_status", {"job_id": "no-such-job"}, ["job_id", "not found", "list_history"]),
    ("job_status", {"job_id": "🎵" * 65}, ["job_id must be 1-64 characters"]),
    ("job_status", {"job_id": "\u202etxt.exe"}, ["job_id", "not found"]),
    ("job_status", {"job_id": "x", "wait_seconds": 1e9}, ["wait_seconds must be in [0, 300]"]),
    ("job_status", {}, ["job_id is required"]),
    ("list_history", {"limit": 0}, ["limit must be in [1, 100] (got 0)"]),
    ("list_history", {"limit": 101}, ["limit must be in [1, 100] (got 101)"]),
    ("list_history", {"status": "done"}, ["status", "pending", "completed"]),
    ("list_history", {"cursor": "not-a-cursor"}, ["cursor"]),
    ("list_history", {"query": "q" * 501}, ["query must be 0-500 characters"]),
    ("cancel_job", {"job_id": "nope"}, ["job_id", "not found"]),
    ("export_to_ardour", {"job_ids": [], "session_name": "s"}, ["job_ids must hold 1-32 items (got 0)"]),
    ("export_to_ardour", {"job_ids": ["nope"], "session_name": "s"}, ["job_id", "nope", "not found"]),
    ("export_to_ardour", {"job_ids": ["a"], "session_name": ""}, ["session_name must be 1-100 characters"]),
    (
        "export_to_ardour",
        {"job_ids": ["a"], "session_name": "s", "arrangement": "x"},
        ["arrangement must be one of sequential, stacked"],
    ),
    (
        "export_to_ardour",
        {"job_ids": ["a"], "session_name": "s", "bpm": 1000},
        ["bpm must be in [20, 300] (got 1000)"],
    ),
    (
        "export_to_ardour",
        {"job_ids": ["a"], "session_name": "s", "gap_seconds": -1},
        ["gap_seconds must be in [0, 60] (got -1)"],
    ),
]


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"), BAD_INPUTS, ids=[f"{t}-{a}"[:60] for t, a, _ in BAD_INPUTS]
)
async def test_bad_input_is_a_clear_tool_error(
    client: Client, tool: str, arguments: dict[str, Any], expected: list[str]
) -> None:
    text = error_text(await client.call_tool(tool, arguments))
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    assert "Traceback" not in text and "pydantic" not in text and "validation error" not in text
    assert (await client.list_tools()).tools  # the server keeps serving


async def test_every_bad_argument_of_a_call_is_reported_at_once(client: Client) -> None:
    arguments = {
        "prompt": "   ",
        "duration": 0,
        "temperature": 0,
        "top_k": -1,
        "top_p": 2,
        "guidance_scale": 11,
        "seed": -1,
        "variations": 5,
        "loudness_lufs": 0,
        "wait_seconds": 301,
    }
    text = error_text(await client.call_tool("generate_music", arguments))
    assert text.startswith("generate_music: 10 invalid arguments, nothing was done: "), text
    for expected in (
        "prompt must be 1-2,000 characters and not blank (got 3 characters)",
        "duration must be in [1, 300] seconds (got 0)",
        "temperature must be in (0, 2] (got 0)",
        "top_k must be in [0, 2048] (got -1)",
        "top_p must be in [0, 1] (got 2)",
        "guidance_scale must be in [0, 10] (got 11)",
        "seed must be in [0, 4294967295] (got -1)",
        "variations must be in [1, 4] (got 5)",
        "loudness_lufs must be in [-40, -6] LUFS (got 0)",
        "wait_seconds must be in [0, 300] (got 301)",
    ):
        assert expected in text, (expected, text)
    assert "pydantic" not in text and "validation error" not in text
    assert structured(await client.call_tool("list_history", {}))["items"] is not None  # nothing queued


async def test_unknown_names_are_json_rpc_errors(client: Client) -> None:
    for call, name in [
        (client.call_tool("no_such_tool", {}), "no_such_tool"),
        (client.get_prompt("no_such_prompt"), "no_such_prompt"),
        (client.read_resource("music://generations/no-such-job"), "no-such-job"),
    ]:
        with pytest.raises(MCPError) as raised:
            await call
        assert raised.value.code == INVALID_PARAMS and name in raised.value.message, raised.value.error
    with pytest.raises(MCPError) as raised:
        await client.get_prompt("compose_session", {})
    assert raised.value.code == INVALID_PARAMS and "idea" in raised.value.message


async def test_compose_session_prompt_walks_the_agent_through_generating_and_exporting(
    client: Client,
) -> None:
    [prompt] = (await client.list_prompts()).prompts
    assert prompt.name == "compose_session" and {a.name for a in prompt.arguments or []} >= {"idea", "takes"}
    result = await client.get_prompt("compose_session", {"idea": "dub techno", "takes": "2"})
    [message] = result.messages
    text = getattr(message.content, "text", "")
    assert "generate_music" in text and "variations=2" in text and "export_to_ardour" in text
    assert "'dub techno'" in text


async def test_resources_list_the_newest_generations_audio(client: Client) -> None:
    [older] = await generate(client, "resource listing, older take", wait_seconds=30)
    [newer] = await generate(client, "resource listing, newer take", wait_seconds=30)
    resources = (await client.list_resources()).resources
    uris = [str(resource.uri) for resource in resources]
    assert uris.index(newer["audio"]["uri"]) < uris.index(older["audio"]["uri"])  # newest first
    assert len(resources) <= RECENT_AUDIO_RESOURCES
    listed = next(r for r in resources if str(r.uri) == newer["audio"]["uri"])
    assert listed.mime_type == "audio/wav" and listed.title == "resource listing, newer take"
    samples, _ = decode_wav((await client.read_resource(listed.uri)).contents)
    assert len(samples) > 0


async def test_job_ids_may_be_shortened_to_a_unique_prefix(client: Client, service: JobService) -> None:
    [job] = await generate(client, "prefix lookup", wait_seconds=30)
    prefix = job["job_id"][:8]
    assert structured(await client.call_tool("job_status", {"job_id": prefix}))["job_id"] == job["job_id"]
    samples, _ = decode_wav((await client.read_resource(f"music://generations/{prefix}/audio")).contents)
    assert len(samples) > 0
    text = error_text(await client.call_tool("job_status", {"job_id": job["job_id"][:7]}))
    assert "not found" in text and "8+" in text
    # Two ids sharing a 9-character prefix (rows written directly, so no worker picks them up).
    base = str(uuid.uuid4())
    twin = base[:9] + ("0" if base[9] != "0" else "1") + base[10:]
    with service.store.engine.begin() as connection:
        for job_id in (base, twin):
            connection.execute(
                insert(GenerationRow).values(
                    id=job_id,
                    prompt="twin",
                    model_name="m",
                    status="cancelled",
                    created_at=datetime.now(UTC),
                    attempts=0,
                    meta={},
                    request_duration_s=1.0,
                    temperature=1.0,
                    top_k=250,
                    top_p=0.0,
                    guidance_scale=3.0,
                )
            )
    text = error_text(await client.call_tool("job_status", {"job_id": base[:9]}))
    assert base in text and twin in text and "more characters" in text
    assert structured(await client.call_tool("job_status", {"job_id": base[:10]}))["job_id"] == base


STANDARD_FORMATS = {"date-time", "date", "time", "duration", "email", "uri", "uri-reference", "uuid"}


def formats_in(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        found = {schema["format"]} if isinstance(schema.get("format"), str) else set()
        return found.union(*(formats_in(value) for value in schema.values()))
    if isinstance(schema, list):
        return set().union(*(formats_in(value) for value in schema))
    return set()


async def test_schemas_use_only_standard_json_schema_formats(client: Client) -> None:
    """A non-standard format such as pydantic's "path" makes strict clients (ajv) warn on every listing."""
    for tool in (await client.list_tools()).tools:
        used = formats_in(tool.input_schema) | formats_in(tool.output_schema)
        assert used <= STANDARD_FORMATS, (tool.name, used)


async def test_full_queue_is_refused_with_the_limit(tiny_checkpoint: Path, tmp_path: Path) -> None:
    idle = JobService(make_settings(tmp_path / "home", tiny_checkpoint, max_queue=2))  # no worker: jobs wait
    async with Client(build_server(idle)) as own:
        await generate(own, "one", wait_seconds=0, variations=2)
        text = error_text(await own.call_tool("generate_music", {"prompt": "three", "wait_seconds": 0}))
    assert "queue is full" in text and "DGX_MUSIC_MAX_QUEUE" in text and "2 pending" in text


async def test_a_job_over_the_time_limit_fails_with_the_reason(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with JobService(make_settings(tmp_path / "home", tiny_checkpoint, job_timeout_s=0.3)) as strict:
        async with Client(build_server(strict)) as own:
            [job] = await generate(own, "too long", duration=30, wait_seconds=60)
    assert job["status"] == "failed" and "DGX_MUSIC_JOB_TIMEOUT_S" in job["error"]


async def test_a_model_that_cannot_load_fails_jobs_and_the_server_keeps_serving(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    with JobService(make_settings(tmp_path / "home", missing)) as broken:
        async with Client(build_server(broken)) as own:
            [job] = await generate(own, "anything", wait_seconds=30)
            assert job["status"] == "failed" and str(missing) in job["error"]
            history = structured(await own.call_tool("list_history", {}))
    assert [item["job_id"] for item in history["items"]] == [job["job_id"]]


async def test_only_one_process_runs_the_worker(service: JobService) -> None:
    """A second service on the same data directory (Claude Desktop starting two servers) queues only."""
    with JobService(service.settings) as second:
        await anyio.sleep(0.3)
        assert second.worker_state == "standby" and service.worker_state == "ready"
        async with Client(build_server(second)) as own:
            [job] = await generate(own, "queued by the standby", wait_seconds=30)
    assert job["status"] == "completed"
