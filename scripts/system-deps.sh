#!/usr/bin/env bash
# System packages the test suite needs beyond Python and pip, installed only when missing:
#   debootstrap             the docker runtime's tenant image is built without a registry
#   chromium, a DejaVu font the browser tests (tests/e2e, upload, auth) drive the system Chromium
#                           through Playwright, whose wheel downloads no browser
#   libnss3-tools           certutil: the HTTPS journey through Traefik puts the dev CA in the
#                           browser's own NSS database (real trust, no ignored errors)
#   systemd                 systemd-analyze verifies the example unit (tests/test_service_manager.py)
#   apache2-utils           ab, run by tests/load/test_load_tools.py (tests/load/ab.sh)
#   docker-compose          resolves certs/gateway-tls/docker-compose.yml as Compose reads it
#                           (tests/test_gateway_tls_files.py)
# It needs root for apt-get; without root it says what to install and carries on (the tests
# that need a missing package then fail with that same message).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

missing=()
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v chromium >/dev/null || missing+=(chromium)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
command -v certutil >/dev/null || missing+=(libnss3-tools)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v ab >/dev/null || missing+=(apache2-utils)
command -v docker-compose >/dev/null || missing+=(docker-compose)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "system-deps: missing ${missing[*]}; install them (Debian: sudo apt-get install -y ${missing[*]})" >&2
    exit 0
fi
apt-get update -q
apt-get install -y -q "${missing[@]}"
