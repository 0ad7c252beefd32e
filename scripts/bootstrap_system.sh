#!/usr/bin/env bash
# Installs the Debian packages that tests use, when run as root: Prometheus and promtool,
# Alertmanager and amtool (end-to-end alert tests), docker-compose (offline compose validation),
# PostgreSQL (the shared feedback store; tests run their own throwaway server, so no cluster is
# created and no service is started).
# Without root it only reports what is missing; the tests that need it then skip (or fail in CI).
set -euo pipefail

# Usage: bootstrap_system.sh [extra Debian packages…] (wrk for `make bench`).
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
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
if [[ " ${missing[*]} " == *" postgresql "* ]]; then
  # No `main` cluster (and so no service to start): tests/support/postgres.py runs initdb itself.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/infersight.conf
fi
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "bootstrap_system: installed ${missing[*]}"
