# DGX Music task runner. `just` itself comes with the test extra (.venv/bin/just) or `pipx install rust-just`;
# nothing in the README needs it. `just --list` shows every recipe.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := env_var_or_default("VENV", ".venv")
py := venv / "bin/python"
bin := venv / "bin"

# Tests that drive whole processes (CLI, servers, Ardour, the install script); the rest are unit tests.
integration := "tests/test_cli*.py tests/test_mcp*.py tests/test_rest*.py tests/test_studio.py tests/test_bundle.py tests/test_server*.py tests/test_e2e*.py tests/test_reliability*.py tests/test_ardour_sessions.py tests/test_deploy.py tests/test_doctor.py"

default:
    @just --list

# Create the virtual environment with the torch build this machine can use (see deploy/torch.sh), then the project.
init:
    test -x {{ py }} || python3 -m venv {{ venv }}
    deploy/torch.sh install {{ py }}
    {{ py }} -m pip install -e '.[test]'

# Prove the GPU works: driver, torch build, CUDA, compute capability, bf16 and a checked matmul.
validate-gpu:
    nvidia-smi -L || { echo "nvidia-smi failed: no NVIDIA driver on this machine" >&2; exit 1; }
    {{ py }} -m mcp_server.doctor --gpu

# On a CUDA machine (<5 min): CUDA graphs vs eager decode, bf16 ms/step at batch 1/4/8, peak memory, 16 s wall.
gpu-check *args:
    {{ py }} -m bench.gpu_check {{ args }}

# Requests arriving 0.25 s apart through the job service (and MCP stdio) against the same ones one at a time.
bench-staggered *args:
    {{ py }} -m bench.staggered --mcp {{ args }}

# What batching can pay on this machine at best: roofline, decoder linears and steps at 1/4/8, the ceiling.
bench-ceiling *args:
    {{ py }} -m bench.ceiling {{ args }}

# Load the configured model (DGX_MUSIC_MODEL), generate 16 s, report latency and peak memory against the targets.
test-model:
    {{ py }} -m mcp_server.doctor --full

# Serve on http://127.0.0.1:8000: the studio at /, REST at /api/v1 (docs at /docs), MCP at /mcp.
# Flags pass through, e.g. `just serve --host 0.0.0.0` (needs DGX_MUSIC_TOKEN). stdio: `dgx-music serve`.
serve *args:
    {{ bin }}/dgx-music serve --transport http --port 8000 {{ args }}

# Generate one clip: `just generate "lofi beat with warm piano" 16`.
generate prompt duration="10" *args:
    {{ bin }}/dgx-music generate {{ quote(prompt) }} --duration {{ duration }} {{ args }}

# The whole suite, as CI runs it.
test *args:
    {{ py }} -m pytest {{ args }}

# Fast tests of single packages (no slow variants, no end-to-end files).
test-unit *args:
    #!/usr/bin/env bash
    set -euo pipefail
    ignores=()
    for pattern in {{ integration }}; do ignores+=("--ignore-glob=$pattern"); done
    exec {{ py }} -m pytest -m "not slow" "${ignores[@]}" {{ args }}

# End-to-end tests: CLI and server processes, Ardour, the install script, doctor.
test-integration *args:
    #!/usr/bin/env bash
    set -euo pipefail
    shopt -s nullglob
    files=({{ integration }})
    exec {{ py }} -m pytest "${files[@]}" {{ args }}

# The suite with line coverage of our packages (terminal summary + htmlcov/).
test-coverage *args:
    {{ py }} -m pytest --cov=engine --cov=storage --cov=mcp_server --cov=ardour_templates \
        --cov-report=term-missing:skip-covered --cov-report=html {{ args }}

lint:
    {{ bin }}/ruff check .
    {{ bin }}/ruff format --check .

format:
    {{ bin }}/ruff format .
    {{ bin }}/ruff check --fix .

typecheck:
    {{ bin }}/mypy

# Everything CI checks.
quality: lint typecheck test

# Create the database, or migrate it to the latest schema (DGX_MUSIC_HOME / DGX_MUSIC_DATABASE_URL).
db-migrate:
    {{ bin }}/dgx-music db upgrade

# Store() creates and migrates in one step, so initialising is migrating an empty database.
alias db-init := db-migrate

# Throughput and latency benchmarks (bench/benchmark.py; `just benchmark --help`).
benchmark *args:
    {{ py }} -m bench.benchmark {{ args }}

# GPU name, driver, utilisation, memory and the processes using it.
gpu-status:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: no NVIDIA driver on this machine" >&2; exit 1; }
    # GB10 has unified memory: memory.used/total read [N/A] there; free reports the shared pool.
    nvidia-smi --query-gpu=index,name,driver_version,compute_cap,temperature.gpu,utilization.gpu,memory.used,memory.total,power.draw --format=csv
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
    free -h

# Peak memory (RSS and CUDA) and latency of the configured model at 8, 16 and 30 s of audio.
profile-memory:
    {{ py }} -m mcp_server.doctor --full --duration 8 --duration 16 --duration 30

# Install or upgrade the systemd service on this machine (deploy/install.sh --help for options).
deploy-dgx *args:
    sudo deploy/install.sh {{ args }}
