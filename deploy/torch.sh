#!/usr/bin/env bash
# Picks and installs the PyTorch build that can drive this machine. Shared by `just init` and deploy/install.sh.
#
#   deploy/torch.sh flavour          print cpu | cu130 | cu128 (and why, on stderr)
#   deploy/torch.sh install PYTHON   pip-install that build of torch into PYTHON's environment
#
# DGX Spark (aarch64 + GB10, compute capability 12.1) needs the CUDA 13 aarch64 wheels from the PyTorch index;
# PyPI's aarch64 torch is CPU-only. On x86_64 the CUDA wheel follows what the driver supports. Elsewhere the
# CPU build, which is also what CI uses (it avoids a multi-GB CUDA download).
# Overrides: DGX_MUSIC_TORCH=cpu|cu130|cu128|cu126, DGX_MUSIC_TORCH_VERSION (default 2.13.0).
set -euo pipefail

TORCH_VERSION="${DGX_MUSIC_TORCH_VERSION:-2.13.0}"
PYTORCH_INDEX="https://download.pytorch.org/whl"

# The highest CUDA version the installed driver supports, e.g. "13.0"; empty without an NVIDIA driver.
driver_cuda_version() {
    command -v nvidia-smi >/dev/null 2>&1 || return 0
    nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p' | head -n 1
}

flavour() {
    if [[ -n "${DGX_MUSIC_TORCH:-}" ]]; then
        echo "torch build forced by DGX_MUSIC_TORCH=${DGX_MUSIC_TORCH}" >&2
        echo "$DGX_MUSIC_TORCH"
        return
    fi
    local arch cuda major minor
    arch="$(uname -m)"
    cuda="$(driver_cuda_version)"
    if [[ "$(uname -s)" != Linux || -z "$cuda" ]]; then
        echo "no NVIDIA driver found (nvidia-smi): CPU build" >&2
        echo cpu
        return
    fi
    major="${cuda%%.*}"
    minor="${cuda#*.}"
    minor="${minor%%.*}"
    if ((major >= 13)); then
        echo "$arch with an NVIDIA driver for CUDA $cuda: CUDA 13 build" >&2
        echo cu130
    elif [[ "$arch" == aarch64 ]]; then
        echo "aarch64 needs a CUDA 13 driver for the CUDA wheels (found CUDA $cuda): CPU build;" \
            "update the NVIDIA driver (DGX OS 7 ships CUDA 13) and re-run" >&2
        echo cpu
    elif ((major == 12 && minor >= 8)); then
        echo "$arch with an NVIDIA driver for CUDA $cuda: CUDA 12.8 build" >&2
        echo cu128
    else
        echo "NVIDIA driver for CUDA $cuda is older than 12.8: CPU build; update the driver or set" \
            "DGX_MUSIC_TORCH=cu126 to try an older CUDA build" >&2
        echo cpu
    fi
}

install() {
    local python="$1" build requirement
    build="$(flavour)"
    if [[ "$(uname -s)" != Linux ]]; then
        # macOS and others have a single torch build on PyPI, without a local version label.
        "$python" -m pip install "torch==${TORCH_VERSION}"
        return
    fi
    # The local version label (+cpu, +cu130) pins the build: a plain ==2.13.0 would count an installed CPU
    # torch as satisfying a CUDA install, and PyPI's x86_64 default pulls the CUDA 12 libraries even on CPU.
    requirement="torch==${TORCH_VERSION}+${build}"
    # Only torch itself comes from the PyTorch index; its dependencies (the nvidia-* CUDA libraries included)
    # resolve from the usual index, so pip does not ask a second index for every one of them.
    "$python" -m pip install --no-deps --extra-index-url "${PYTORCH_INDEX}/${build}" "$requirement"
    "$python" -m pip install "$requirement"
}

case "${1:-}" in
    flavour) flavour ;;
    install)
        [[ $# -eq 2 ]] || { echo "usage: $0 install PYTHON" >&2; exit 2; }
        install "$2"
        ;;
    *)
        echo "usage: $0 flavour | install PYTHON" >&2
        exit 2
        ;;
esac
