"""Scale-out figures: claim latency (p50/p95 per worker) and failover timings with 3 workers, 2 front-ends.

Runs the failover scenario of tests/test_scaleout.py (a throw-away PostgreSQL from the local binaries,
3 `dgx-music worker` processes on a tiny checkpoint, 2 `serve --no-worker` front-ends, 6 MCP clients, 60
one-second jobs, one worker SIGKILLed and one SIGSTOPped past its 3 s lease) and prints the figures it
measured, so the numbers come from the same code the test checks.
Usage: ``python -m bench.scaleout [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEST = "tests/test_scaleout.py::test_three_workers_two_frontends_sixty_jobs_through_a_kill_and_a_stall"
MARK = "scale-out figures: "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-m", "slow", "-p", "no:cacheprovider", TEST],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    lines = [line for line in run.stdout.splitlines() if MARK in line]
    if run.returncode != 0 or not lines:
        sys.exit(f"the scenario failed (exit {run.returncode}):\n{run.stdout[-4000:]}{run.stderr[-2000:]}")
    figures = json.loads(lines[-1].split(MARK, 1)[1])
    for key, value in figures.items():
        print(f"{key:>36}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
