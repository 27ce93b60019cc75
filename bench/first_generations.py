"""Why the first generations after `dgx-music serve --transport http` are slow: time from start to each WAV.

Starts the server as the README's first command does, waits for its ready line, then asks for ``--count``
generations one after another over streamable HTTP and splits each into the time its job waited in the queue
(created -> started: the worker still loading the model) and the time it ran (started -> completed), beside
the model load the worker logged.

    python -m bench.first_generations                     # tiny random checkpoint (seconds)
    python -m bench.first_generations --checkpoint DIR    # e.g. the random musicgen-small architecture
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import anyio
from mcp import Client

from engine.musicgen.checkpoints import build_random_checkpoint

DGX_MUSIC = str(Path(sys.executable).parent / "dgx-music")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def generate_one_after_another(url: str, count: int, duration: float) -> list[tuple[float, dict]]:
    timings = []
    async with Client(url) as client:
        for i in range(count):
            started = time.monotonic()
            result = await client.call_tool(
                "generate_music",
                {"prompt": f"first-run take {i}", "duration": duration, "seed": i, "wait_seconds": 300},
            )
            assert result.structured_content is not None, result.content
            [job] = result.structured_content["jobs"]
            timings.append((time.monotonic() - started, job))
    return timings


def seconds_between(start: str | None, end: str | None) -> float:
    if start is None or end is None:
        return float("nan")
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="MusicGen checkpoint directory (default: tiny random)"
    )
    parser.add_argument("--count", type=int, default=4, help="generations, one after another")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds of audio each")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dgx-first-") as scratch:
        root = Path(scratch)
        checkpoint = args.checkpoint or build_random_checkpoint(root / "tiny")
        port = free_port()
        env = {**os.environ, "DGX_MUSIC_HOME": str(root / "home"), "DGX_MUSIC_MODEL": str(checkpoint)}
        env.setdefault("DGX_MUSIC_DEVICE", "cpu")
        launched = time.monotonic()
        server = subprocess.Popen(
            [DGX_MUSIC, "serve", "--transport", "http", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stderr is not None
            log = []
            for line in server.stderr:
                log.append(line)
                if "dgx-music ready:" in line:
                    break
            ready = time.monotonic() - launched
            timings = anyio.run(
                generate_one_after_another, f"http://127.0.0.1:{port}/mcp", args.count, args.duration
            )
        finally:
            server.terminate()
            _, rest = server.communicate(timeout=60)
        log_text = "".join(log) + (rest or "")
        loaded = re.search(r"loaded .* in ([0-9.]+) s$", log_text, re.M)
        worker = [line for line in log_text.splitlines() if "mcp_server.service" in line]

    print(f"checkpoint {checkpoint}; {args.duration:g} s per generation; device {env['DGX_MUSIC_DEVICE']}")
    print(f"start -> ready line: {ready:.1f} s")
    if loaded:
        print(f"model load as the engine timed it (from files to device): {loaded.group(1)} s")
    print("the worker's log (its clock):", *(f"  {line[:150]}" for line in worker), sep="\n")
    print(f"{'take':>4} {'call wall s':>12} {'queued s':>9} {'ran s':>7}")
    for i, (wall, job) in enumerate(timings):
        queued = seconds_between(job["created_at"], job["started_at"])
        ran = seconds_between(job["started_at"], job["completed_at"])
        print(f"{i:>4} {wall:>12.2f} {queued:>9.2f} {ran:>7.2f}")


if __name__ == "__main__":
    main()
