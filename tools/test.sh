#!/usr/bin/env bash
# Everything the tests need on a fresh Debian machine, then lint, types and the whole suite
# (live tests start real servers on 127.0.0.1). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
debs=(acl logrotate mmdebstrap chromium nodejs apache2 apache2-dev libapache2-mod-wsgi-py3 uwsgi uwsgi-plugin-python3 nginx haproxy wrk postgresql prometheus
      python3-venv python3-dev python3-pip podman runc catatonit netavark iproute2)
missing=()
for deb in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$deb")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "tools/test.sh: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
PYTHON="${PYTHON:-/usr/bin/python3}" tools/venv.sh test
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
exec .venv/bin/pytest "$@"
