"""Requests that arrive one after another, through the job service (and through MCP over stdio).

    python -m bench.staggered                     # musicgen-small architecture, random weights, fp32
    python -m bench.staggered --tiny              # CI smoke: a tiny checkpoint, seconds
    python -m bench.staggered --json out.json     # also write the results as JSON

Scenarios, all in one process run, fp32 by default, every request ``--duration`` seconds (2):

1. **cold start**: the service starts and one request is submitted at once; seconds until its audio is
   stored (model load included), and the model's load time;
2. **solo**: the same requests one at a time (each submitted when the previous is done): each request's
   solo latency, and the total;
3. **staggered N** (4 and 8): N requests submitted ``--gap`` seconds (0.25) apart; throughput against solo
   (solo total / staggered wall) and each request's latency (submit to stored audio) against its solo one;
4. **short after long**: a ``--long`` second request (20), and a 2 s one submitted 1 s after it; the short
   one's latency as a share of the long one's wall time;
5. **MCP stdio** (``--mcp``): ``dgx-music serve`` as a subprocess; four ``generate_music`` calls made one
   after another with ``wait_seconds`` 0 against four made one at a time (each waiting for its result).

Targets (issue 11, this CPU): staggered 4 ≥ 3× and 8 ≥ 5× solo throughput, every latency ≤ 1.6× solo,
short-after-long < 40 %, MCP ≥ 2.5×. The machine's load average is printed: on a shared CPU the wall figures
are noisy. So each service scenario also records this process's CPU seconds (every thread: worker, asyncio,
torch's), and staggered N its **CPU throughput**: the CPU seconds its requests took one at a time over the CPU
seconds they took together. Other processes' load hardly changes that figure (it counts work, not waiting),
so on a busy machine it is the steadier measure of what batching saves; with one torch thread
(``--threads 1``) no spinning OpenMP thread inflates it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psutil
import torch

from bench.benchmark import resolve_checkpoint
from engine.musicgen.checkpoints import SAMPLE_PROMPTS as PROMPTS
from engine.request import GenerationRequest
from mcp_server.config import Settings
from mcp_server.service import JobService


@dataclass
class Scenario:
    name: str
    requests: int
    wall_seconds: float
    latencies: list[float]
    solo_latencies: list[float] = field(default_factory=list)
    throughput_vs_solo: float | None = None
    note: str = ""
    cpu_seconds: float | None = None  # this process's CPU time over the scenario
    solo_cpu_seconds: list[float] = field(default_factory=list)
    cpu_throughput_vs_solo: float | None = None
    # The worker's steps over the scenario by the jobs each carried: (steps, mean ms), from its telemetry.
    steps: dict[int, tuple[int, float]] = field(default_factory=dict)

    @property
    def worst_latency_ratio(self) -> float | None:
        if not self.solo_latencies:
            return None
        return max(mine / solo for mine, solo in zip(self.latencies, self.solo_latencies, strict=True))


def request(index: int, duration: float) -> GenerationRequest:
    return GenerationRequest(prompt=PROMPTS[index % len(PROMPTS)], duration=duration, seed=index)


@contextmanager
def service(home: Path, checkpoint: Path, dtype: str) -> Iterator[JobService]:
    settings = Settings.load({}, home=home, model=str(checkpoint), device="cpu", dtype=dtype, max_batch=8)
    with JobService(settings) as running:
        yield running


async def timed_job(jobs: JobService, item: GenerationRequest, submitted: float | None = None) -> float:
    """Submit ``item`` and return seconds from submission to its stored audio."""
    started = time.monotonic() if submitted is None else submitted
    [job] = await jobs.submit([item])
    [done] = await jobs.wait([job.job_id], timeout=3600)
    if done.status != "completed":
        raise RuntimeError(f"job {done.job_id} ended {done.status}: {done.error}")
    return time.monotonic() - started


async def cpu_timed_job(jobs: JobService, item: GenerationRequest) -> tuple[float, float]:
    """(seconds to stored audio, this process's CPU seconds meanwhile) of one request submitted alone."""
    cpu = time.process_time()
    latency = await timed_job(jobs, item)
    return latency, time.process_time() - cpu


def steps_since(jobs: JobService, before: dict[int, tuple[int, float]]) -> dict[int, tuple[int, float]]:
    """The worker's steps since ``before`` (``Telemetry.step_totals``): count and mean ms by jobs carried."""
    steps = {}
    for carried, (count, seconds) in sorted(jobs.telemetry.step_totals().items()):
        earlier_count, earlier_seconds = before.get(carried, (0, 0.0))
        if count > earlier_count:
            added = count - earlier_count
            steps[carried] = (added, (seconds - earlier_seconds) / added * 1e3)
    return steps


async def ready(jobs: JobService) -> None:
    while jobs.worker_state != "ready":
        if jobs.worker_state.startswith("load failed"):
            raise RuntimeError(jobs.worker_state)
        await anyio.sleep(0.05)


async def staggered(
    jobs: JobService, items: Sequence[GenerationRequest], gap: float
) -> tuple[float, list[float]]:
    latencies = [0.0] * len(items)
    started = time.monotonic()

    async def one(index: int) -> None:
        await anyio.sleep(index * gap)
        latencies[index] = await timed_job(jobs, items[index])

    async with anyio.create_task_group() as group:
        for index in range(len(items)):
            group.start_soon(one, index)
    return time.monotonic() - started, latencies


async def service_scenarios(args: argparse.Namespace, checkpoint: Path, scratch: Path) -> list[Scenario]:
    results = []
    most = max(args.counts)
    items = [request(index, args.duration) for index in range(most)]
    with service(scratch / "cold", checkpoint, args.dtype) as jobs:
        started = time.monotonic()
        latency = await timed_job(jobs, request(99, args.duration), started)
        first_audio = jobs.worker.first_audio_seconds if jobs.worker is not None else None
        results.append(
            Scenario(
                "cold start",
                1,
                latency,
                [latency],
                note=f"worker start to first stored audio {first_audio or 0:.1f} s",
            )
        )
        print_row(results[-1])
    with service(scratch / "warm", checkpoint, args.dtype) as jobs:
        await ready(jobs)
        await timed_job(jobs, request(98, 1.0))  # warm-up: kernels, page faults of memory-mapped weights
        before = jobs.telemetry.step_totals()
        timed = [await cpu_timed_job(jobs, item) for item in items]
        solo, solo_cpu = [latency for latency, _ in timed], [cpu for _, cpu in timed]
        results.append(
            Scenario(
                "solo",
                most,
                sum(solo),
                solo,
                cpu_seconds=sum(solo_cpu),
                solo_cpu_seconds=solo_cpu,
                steps=steps_since(jobs, before),
            )
        )
        print_row(results[-1])
        for count in args.counts:
            cpu, before = time.process_time(), jobs.telemetry.step_totals()
            wall, latencies = await staggered(jobs, items[:count], args.gap)
            cpu = time.process_time() - cpu
            scenario = Scenario(
                f"staggered {count}",
                count,
                wall,
                latencies,
                solo_latencies=solo[:count],
                throughput_vs_solo=sum(solo[:count]) / wall,
                note=f"{args.gap:g} s apart",
                cpu_seconds=cpu,
                solo_cpu_seconds=solo_cpu[:count],
                cpu_throughput_vs_solo=sum(solo_cpu[:count]) / cpu,
                steps=steps_since(jobs, before),
            )
            results.append(scenario)
            print_row(scenario)
        if args.long:
            long_item, short_item = request(50, args.long), request(51, args.duration)
            wall, latencies = await staggered(jobs, [long_item, short_item], 1.0)
            long_latency, short_latency = latencies
            results.append(
                Scenario(
                    "short after long",
                    2,
                    wall,
                    latencies,
                    note=f"{args.duration:g} s submitted 1 s after {args.long:g} s: "
                    f"{short_latency / long_latency:.0%} of the long one's wall time",
                )
            )
            print_row(results[-1])
    return results


async def mcp_scenario(args: argparse.Namespace, checkpoint: Path, scratch: Path) -> Scenario:
    from mcp import Client, StdioServerParameters

    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    env.update(
        DGX_MUSIC_HOME=str(scratch / "mcp"),
        DGX_MUSIC_MODEL=str(checkpoint),
        DGX_MUSIC_DEVICE="cpu",
        DGX_MUSIC_DTYPE=args.dtype,
        OMP_NUM_THREADS=str(args.threads),
    )
    server = StdioServerParameters(
        command=str(Path(sys.executable).parent / "dgx-music"), args=["serve"], env=env
    )

    async def call(client: Any, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = await client.call_tool(name, arguments)
        structured: dict[str, Any] = result.structured_content or {}
        return structured

    async def generate(client: Any, index: int, wait: float) -> str:
        item = request(index, args.duration)
        arguments = {
            "prompt": item.prompt,
            "duration": item.duration,
            "seed": item.seed,
            "wait_seconds": wait,
        }
        [job] = (await call(client, "generate_music", arguments))["jobs"]
        return str(job["job_id"])

    async def finish(client: Any, job_id: str) -> None:
        status = await call(client, "job_status", {"job_id": job_id, "wait_seconds": 300})
        if status.get("status") != "completed":
            raise RuntimeError(f"MCP job {job_id}: {status}")

    def server_cpu() -> float:
        """CPU seconds of the ``dgx-music serve`` subprocess (this process's only child) so far."""
        return sum(sum(child.cpu_times()[:2]) for child in psutil.Process().children(recursive=True))

    async with Client(server) as client:
        await finish(client, await generate(client, 97, 0))  # warm: model loaded, kernels initialised
        started, cpu = time.monotonic(), server_cpu()
        for index in range(4):
            await finish(client, await generate(client, index, 0))
        one_at_a_time, one_at_a_time_cpu = time.monotonic() - started, server_cpu() - cpu
        started, cpu = time.monotonic(), server_cpu()
        ids = [await generate(client, index + 10, 0) for index in range(4)]
        for job_id in ids:
            await finish(client, job_id)
        together, together_cpu = time.monotonic() - started, server_cpu() - cpu
    return Scenario(
        "MCP stdio 4 calls",
        4,
        together,
        [together],
        throughput_vs_solo=one_at_a_time / together,
        note=f"one after another (wait 0) {together:.1f} s vs one at a time {one_at_a_time:.1f} s; "
        f"server cpu {together_cpu:.1f} s vs {one_at_a_time_cpu:.1f} s",
        cpu_seconds=together_cpu,
        cpu_throughput_vs_solo=one_at_a_time_cpu / together_cpu,
    )


def print_row(scenario: Scenario) -> None:
    ratio = "-" if scenario.throughput_vs_solo is None else f"{scenario.throughput_vs_solo:.2f}x"
    worst = scenario.worst_latency_ratio
    latencies = " ".join(f"{value:.1f}" for value in scenario.latencies)
    solo = " ".join(f"{value:.1f}" for value in scenario.solo_latencies) or "-"
    cpu = "" if scenario.cpu_seconds is None else f"  cpu {scenario.cpu_seconds:.1f} s"
    if scenario.cpu_throughput_vs_solo is not None:
        cpu += f" (cpu throughput {scenario.cpu_throughput_vs_solo:.2f}x)"
    if scenario.steps:
        carried = ", ".join(f"{jobs}: {count} x {ms:.0f} ms" for jobs, (count, ms) in scenario.steps.items())
        cpu += f"  steps by jobs carried [{carried}]"
    print(
        f"{scenario.name:<20} {scenario.requests:>3}  wall {scenario.wall_seconds:7.1f} s  "
        f"throughput {ratio:>7}  "
        f"worst latency/solo {'-' if worst is None else f'{worst:.2f}x':>6}  latencies [{latencies}] "
        f"solo [{solo}]{cpu}  {scenario.note}",
        flush=True,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="a MusicGen checkpoint directory (hub layout)")
    source.add_argument(
        "--build-small", type=Path, metavar="DIR", help="build (or reuse) the random small model"
    )
    parser.add_argument("--tiny", action="store_true", help="CI smoke: tiny checkpoint, 1 s, counts 2")
    parser.add_argument("--dtype", default="float32", help="the engine's dtype (default float32)")
    parser.add_argument("--duration", type=float, help="seconds per request (default 2; --tiny 1)")
    parser.add_argument("--counts", type=lambda text: [int(n) for n in text.split(",")], help="default 4,8")
    parser.add_argument("--gap", type=float, default=0.25, help="seconds between submissions (0.25)")
    parser.add_argument("--long", type=float, help="the long request of 'short after long' (20; 0 = skip)")
    parser.add_argument("--mcp", action="store_true", help="also run the MCP-over-stdio scenario")
    parser.add_argument("--mcp-only", action="store_true", help="run only the MCP-over-stdio scenario")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results to PATH as JSON")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: torch's; --tiny: 1, as OpenMP spins on a busy CPU)",
    )
    args = parser.parse_args(argv)
    args.threads = args.threads or (1 if args.tiny else torch.get_num_threads())
    args.duration = args.duration or (1.0 if args.tiny else 2.0)
    args.counts = args.counts or ([2] if args.tiny else [4, 8])
    args.long = (3.0 if args.tiny else 20.0) if args.long is None else args.long
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"load average at start {os.getloadavg()}, cpus {os.cpu_count()}, torch threads {args.threads}, "
        f"dtype {args.dtype}, {args.duration:g} s per request",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="dgx-music-staggered-") as scratch_dir:
        scratch = Path(scratch_dir)
        checkpoint = resolve_checkpoint(args, scratch)
        results = [] if args.mcp_only else anyio.run(service_scenarios, args, checkpoint, scratch)
        if args.mcp or args.mcp_only:
            results.append(anyio.run(mcp_scenario, args, checkpoint, scratch))
            print_row(results[-1])
    print(f"load average at end {os.getloadavg()}", flush=True)
    if args.json is not None:
        rows = [{**asdict(result), "worst_latency_ratio": result.worst_latency_ratio} for result in results]
        args.json.write_text(json.dumps({"load_average": os.getloadavg(), "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
