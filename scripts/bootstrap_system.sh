#!/usr/bin/env bash
# Installs the Debian packages that tests use (Prometheus and promtool), when run as root.
# Without root it only reports what is missing; the tests that need it then skip (or fail in CI).
set -euo pipefail

# Usage: bootstrap_system.sh [extra Debian packages…] (wrk for `make bench`).
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
for pkg in "$@"; do
  command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap_system: not root; missing Debian packages: ${missing[*]}" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "bootstrap_system: installed ${missing[*]}"
