#!/usr/bin/env bash
# Install dgx-music as a systemd service: user, virtual environment with the right torch, data directory,
# env file with a generated token, unit; start it, then run `dgx-music doctor`. Safe to re-run: it upgrades
# the code and keeps the env file (and its token).
#
#   sudo deploy/install.sh [--model M] [--pull]          a real install (DGX Spark, x86_64 + CUDA, CPU)
#   deploy/install.sh --root DIR --no-systemctl ...      everything under DIR, without useradd/chown/systemctl
#
# Options:
#   --root DIR         install under DIR (DESTDIR-style: files name the final paths, /etc/..., /opt/...)
#   --no-systemctl     skip useradd, chown and systemctl; doctor runs as the calling user (CI, containers)
#   --venv-from DIR    link an existing virtual environment that has dgx-music instead of building one
#   --python PYTHON    interpreter for a new virtual environment (default: python3; needs >= 3.11)
#   --model M          DGX_MUSIC_MODEL for a new env file (default facebook/musicgen-small)
#   --pull             download the model into the service's Hugging Face cache before starting
#   --no-doctor        do not run `dgx-music doctor` at the end
set -euo pipefail

SERVICE=dgx-music
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT=""
SYSTEMCTL=1
VENV_FROM=""
PYTHON=python3
MODEL=""
PULL=0
DOCTOR=1

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "install.sh: error: $*" >&2; exit 1; }
step() { echo "==> $*"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --root) ROOT="$(realpath -m "${2:?--root needs a directory}")"; shift 2 ;;
        --no-systemctl) SYSTEMCTL=0; shift ;;
        --venv-from) VENV_FROM="$(realpath -m "${2:?--venv-from needs a directory}")"; shift 2 ;;
        --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
        --model) MODEL="${2:?--model needs a model id or directory}"; shift 2 ;;
        --pull) PULL=1; shift ;;
        --no-doctor) DOCTOR=0; shift ;;
        -h | --help) usage ;;
        *) echo "install.sh: unknown option $1" >&2; usage ;;
    esac
done

APP_DIR=/opt/dgx-music
VENV="$APP_DIR/venv"
DATA_DIR=/var/lib/dgx-music
CONF_DIR=/etc/dgx-music
ENV_FILE="$CONF_DIR/dgx-music.env"
UNIT_FILE=/etc/systemd/system/dgx-music.service

[[ "$(uname -s)" == Linux ]] || die "the service needs Linux and systemd; on other systems run \`dgx-music serve\`"
if ((SYSTEMCTL)); then
    [[ $EUID -eq 0 ]] || die "run as root (sudo $0), or use --root DIR --no-systemctl for a trial install"
    command -v systemctl >/dev/null || die "systemctl not found: use --no-systemctl and start the server yourself"
fi

# Owner and group of the service's files: the service user, or whoever runs a --no-systemctl install.
if ((SYSTEMCTL)); then OWNER="$SERVICE"; else OWNER="$(id -un)"; fi
GROUP="$(id -gn "$OWNER" 2>/dev/null || id -gn)"

create_user() {
    ((SYSTEMCTL)) || return 0
    if ! getent passwd "$SERVICE" >/dev/null; then
        step "creating system user $SERVICE"
        useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "DGX Music MCP server" "$SERVICE"
    fi
    GROUP="$SERVICE"
    # The NVIDIA device nodes are group-owned by video/render on some distributions.
    local group
    for group in video render; do
        if getent group "$group" >/dev/null; then usermod -a -G "$group" "$SERVICE"; fi
    done
}

# install -d with owner/group only where we may chown (root); a --no-systemctl install keeps the caller's.
make_dir() {
    local mode="$1" dir="$2"
    if [[ $EUID -eq 0 ]]; then
        install -d -m "$mode" -o "$OWNER" -g "$GROUP" "$ROOT$dir"
    else
        install -d -m "$mode" "$ROOT$dir"
    fi
}

create_dirs() {
    step "data directory $ROOT$DATA_DIR"
    install -d -m 0755 "$ROOT$APP_DIR" "$ROOT/etc/systemd/system"
    make_dir 0750 "$DATA_DIR"
    make_dir 0750 "$DATA_DIR/huggingface"
    make_dir 0750 "$DATA_DIR/cache"
    install -d -m 0750 "$ROOT$CONF_DIR"
    if [[ $EUID -eq 0 ]]; then chgrp "$GROUP" "$ROOT$CONF_DIR"; fi
}

build_venv() {
    local venv="$ROOT$VENV"
    if [[ -n "$VENV_FROM" ]]; then
        [[ -x "$VENV_FROM/bin/dgx-music" ]] || die "--venv-from $VENV_FROM has no bin/dgx-music: install the project into it"
        if ((SYSTEMCTL)) && [[ "$VENV_FROM" == /home/* || "$VENV_FROM" == /root/* ]]; then
            die "--venv-from $VENV_FROM is under /home or /root, which the unit's ProtectHome= hides from the service"
        fi
        if [[ -e "$venv" && ! -L "$venv" ]]; then
            die "$venv exists and is not a link: remove it, or drop --venv-from to upgrade it in place"
        fi
        step "linking $venv -> $VENV_FROM"
        ln -sfn "$VENV_FROM" "$venv"
        return
    fi
    if [[ -L "$venv" ]]; then rm "$venv"; fi  # an earlier --venv-from install: build a real venv instead
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON is older than Python 3.11: pass --python python3.11 (or newer)"
    if [[ ! -x "$venv/bin/python" ]]; then
        step "creating virtual environment $venv"
        "$PYTHON" -m venv "$venv"
    fi
    step "installing torch ($("$SRC/deploy/torch.sh" flavour 2>/dev/null) build)"
    "$SRC/deploy/torch.sh" install "$venv/bin/python"
    # A regular (not editable) install: the service must not read code from a checkout under /home, which
    # ProtectHome= hides from it.
    step "installing dgx-music from $SRC"
    "$venv/bin/python" -m pip install --upgrade "$SRC"
}

new_token() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# Writes the env file on the first run; later runs only fill in a missing token: edits are kept.
write_env_file() {
    local target="$ROOT$ENV_FILE" source model="" tmp
    if [[ -f "$target" ]]; then
        if grep -qE '^DGX_MUSIC_TOKEN=.+' "$target"; then
            step "keeping $target and its token"
            return
        fi
        source="$target"
    else
        source="$SRC/deploy/dgx-music.env"
        model="$MODEL"
    fi
    step "writing $target (new bearer token)"
    tmp="$(mktemp "$ROOT$CONF_DIR/.dgx-music.env.XXXXXX")"
    awk -v token="$(new_token)" -v model="$model" '
        /^DGX_MUSIC_TOKEN=$/ { print "DGX_MUSIC_TOKEN=" token; seen = 1; next }
        /^DGX_MUSIC_TOKEN=/ { seen = 1 }
        /^DGX_MUSIC_MODEL=/ && model != "" { print "DGX_MUSIC_MODEL=" model; next }
        { print }
        END { if (!seen) print "DGX_MUSIC_TOKEN=" token }
    ' "$source" >"$tmp"
    mv "$tmp" "$target"
}

# The env file holds the token: readable by root and the service's group only, whatever happened before.
protect_env_file() {
    chmod 0640 "$ROOT$ENV_FILE"
    if [[ $EUID -eq 0 ]]; then chown "root:$GROUP" "$ROOT$ENV_FILE"; fi
}

install_unit() {
    step "installing $ROOT$UNIT_FILE"
    install -m 0644 "$SRC/deploy/dgx-music.service" "$ROOT$UNIT_FILE"
    # The worker template is installed, not enabled: scale-out is opt-in (docs/SCALE-OUT.md).
    install -m 0644 "$SRC/deploy/dgx-music-worker@.service" "$ROOT$(dirname "$UNIT_FILE")/dgx-music-worker@.service"
    install -m 0644 "$SRC/docs/DEPLOY.md" "$ROOT$APP_DIR/DEPLOY.md"
    install -m 0644 "$SRC/docs/SCALE-OUT.md" "$ROOT$APP_DIR/SCALE-OUT.md"
}

# Runs a dgx-music command the way the service would: its user, a clean environment and the env file's
# variables (systemd passes nothing else). A --root install maps the file's data paths into the root.
as_service() {
    local -a vars=("PATH=/usr/local/bin:/usr/bin:/bin" "HOME=$ROOT$DATA_DIR" "LANG=C.UTF-8")
    local line key value
    while IFS= read -r line; do
        [[ "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
        key="${BASH_REMATCH[1]}" value="${BASH_REMATCH[2]}"
        if [[ -n "$ROOT" && "$value" == /* && "$key" =~ ^(DGX_MUSIC_HOME|HF_HOME|XDG_CACHE_HOME)$ ]]; then
            value="$ROOT$value"
        fi
        vars+=("$key=$value")
    done <"$ROOT$ENV_FILE"
    local -a run=(env -i "${vars[@]}" "$@")
    if ((SYSTEMCTL)); then run=(runuser -u "$SERVICE" -- "${run[@]}"); fi
    (cd / && "${run[@]}")
}

pull_model() {
    ((PULL)) || return 0
    local model
    model="$(sed -n 's/^DGX_MUSIC_MODEL=//p' "$ROOT$ENV_FILE" | tail -n 1)"
    step "downloading ${model:-facebook/musicgen-small} into the service's cache"
    as_service HF_HUB_OFFLINE=0 "$ROOT$VENV/bin/dgx-music" pull "${model:-facebook/musicgen-small}"
}

start_service() {
    if ((!SYSTEMCTL)); then
        step "--no-systemctl: not starting; run: systemctl daemon-reload && systemctl enable --now $SERVICE"
        return
    fi
    step "starting $SERVICE"
    systemctl daemon-reload
    systemctl enable "$SERVICE" >/dev/null
    # restart, not start: a re-run must pick up new code and settings.
    systemctl restart "$SERVICE"
}

run_doctor() {
    ((DOCTOR)) || return 0
    step "dgx-music doctor"
    if ! as_service "$ROOT$VENV/bin/dgx-music" doctor; then
        echo "install.sh: installed, but doctor found a blocker (FAIL lines above); fix it, then" \
            "\`sudo systemctl restart $SERVICE\`" >&2
        return 1
    fi
    if ((SYSTEMCTL)); then
        echo "Service: systemctl status $SERVICE; logs: journalctl -u $SERVICE and $DATA_DIR/logs/server.log"
        echo "Token for clients: sudo grep DGX_MUSIC_TOKEN $ENV_FILE"
    fi
}

create_user
create_dirs
build_venv
write_env_file
protect_env_file
install_unit
pull_model
start_service
run_doctor
