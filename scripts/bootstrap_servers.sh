#!/usr/bin/env bash
# Create one virtualenv per real model server used by the integration tests:
#   .venvs/<name>  from  requirements/servers/<name>.txt   for name in mlserver kserve mlflow
#
# Usage: scripts/bootstrap_servers.sh [--force] [mlserver|kserve|mlflow ...]
#
# Idempotent: .venvs/<name>/.requirements.sha256 holds the sha256 of the requirements file the
# venv was built from; a venv is rebuilt (from scratch) only when that file changed, the venv is
# broken, or --force is given.  The servers are installed in parallel, each logging to
# .venvs/<name>.log; one line per server tells the outcome and the seconds taken.  Exits non-zero
# if any install failed.  Needs python3 (3.11) and network access to PyPI only.  Set PYTHON to
# use another interpreter.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
ALL=(mlserver kserve mlflow)
VENVS="$ROOT/.venvs"
PIP_TIMEOUT_S="${BOOTSTRAP_PIP_TIMEOUT:-1500}"  # bound every install

force=0
names=()
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        mlserver|kserve|mlflow) [[ " ${names[*]} " == *" $arg "* ]] || names+=("$arg") ;;
        *) echo "bootstrap_servers: unknown server '$arg' (expected: ${ALL[*]})" >&2; exit 2 ;;
    esac
done
[[ ${#names[@]} -gt 0 ]] || names=("${ALL[@]}")

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "bootstrap_servers: '$PYTHON' not found; install Python 3.11" >&2
    exit 1
fi
mkdir -p "$VENVS"

# A venv with pip.  Debian's python3 lacks ensurepip unless python3-venv is installed: then make
# the venv without pip and bootstrap pip from its wheel on PyPI.
make_venv() {
    local venv="$1"
    if "$PYTHON" -m venv "$venv" >/dev/null 2>&1; then
        return 0
    fi
    echo "python3 -m venv failed (no ensurepip?): bootstrapping pip from PyPI"
    rm -rf "$venv"
    "$PYTHON" -m venv --without-pip "$venv"
    "$venv/bin/python" - "$venv" <<'PY'
import hashlib, json, os, subprocess, sys, tempfile, urllib.parse, urllib.request
api = "https://pypi.org/pypi/pip/json"
with urllib.request.urlopen(api, timeout=60) as r:
    info = json.load(r)
wheel = next(u for u in info["urls"] if u["filename"].endswith("-py3-none-any.whl"))
with urllib.request.urlopen(urllib.parse.urljoin(api, wheel["url"]), timeout=120) as r:
    data = r.read()
if hashlib.sha256(data).hexdigest() != wheel["digests"]["sha256"]:
    sys.exit("pip wheel: sha256 mismatch")
path = os.path.join(tempfile.mkdtemp(), wheel["filename"])
with open(path, "wb") as fh:
    fh.write(data)
subprocess.check_call([sys.executable, os.path.join(path, "pip"), "install", "--no-index", path])
PY
}

install_one() {
    local name="$1"
    local req="$ROOT/requirements/servers/$name.txt"
    local venv="$VENVS/$name"
    local stamp="$venv/.requirements.sha256"
    local log="$VENVS/$name.log"
    local want lockfd
    # One builder per venv at a time (parallel test sessions, a second bootstrap run...).
    exec {lockfd}>"$VENVS/$name.lock"
    if ! flock -w "$PIP_TIMEOUT_S" "$lockfd"; then
        echo "timed out waiting for $VENVS/$name.lock" > "$VENVS/$name.log"
        return 1
    fi
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [[ $force -eq 0 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
        && "$venv/bin/python" -c "import sys" >/dev/null 2>&1; then
        echo "up-to-date" > "$VENVS/$name.result"
        return 0
    fi
    {
        echo "== $(date -u +%FT%TZ) building $venv from $req ($want)"
        rm -rf "$venv"
        make_venv "$venv"
        timeout "$PIP_TIMEOUT_S" "$venv/bin/python" -m pip install \
            --disable-pip-version-check --no-input --progress-bar off -r "$req"
        "$venv/bin/python" -m pip check
        echo "$want" > "$stamp"
        echo "== done"
    } >"$log" 2>&1
    echo "installed" > "$VENVS/$name.result"
}

declare -A pids
for name in "${names[@]}"; do
    rm -f "$VENVS/$name.result" "$VENVS/$name.seconds"
    (
        # shellcheck disable=SC2034  # read by the EXIT trap
        start=$(date +%s)
        # A trap, not `install_one || ...`, which would switch off errexit inside it.
        trap 'echo $(( $(date +%s) - start )) > "$VENVS/$name.seconds"' EXIT
        install_one "$name"
    ) &
    pids[$name]=$!
done

failed=0
for name in "${names[@]}"; do
    if wait "${pids[$name]}"; then
        status="$(cat "$VENVS/$name.result" 2>/dev/null || echo ok)"
    else
        status=FAILED
        failed=1
    fi
    seconds="$(cat "$VENVS/$name.seconds" 2>/dev/null || echo '?')"
    printf '%-9s %-10s %5ss\n' "$name" "$status" "$seconds"
    if [[ $status == FAILED ]]; then
        echo "  log: $VENVS/$name.log" >&2
        grep -v "^WARNING: Location" "$VENVS/$name.log" 2>/dev/null | tail -n 25 \
            | sed "s/^/  $name| /" >&2 || true
    fi
    rm -f "$VENVS/$name.result" "$VENVS/$name.seconds"
done
exit "$failed"
