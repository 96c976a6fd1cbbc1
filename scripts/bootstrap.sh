#!/usr/bin/env bash
# Set up a fresh machine for `make demo` and `make test`: a virtual environment with
# the package and its test tools, and the system programs the farm talks to.
# As root it installs what is missing from Debian's packages; otherwise it says
# exactly what to install and stops.
set -euo pipefail

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

need_python() {
  "$PYTHON" - <<'PY' || { echo "bootstrap: Mediafarm needs Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
}

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

postgres_binaries() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || have initdb; }

apt_install() {
  if [ "$(id -u)" != 0 ] || ! have apt-get; then
    echo "bootstrap: missing $*; install them (Debian: apt-get install $*) and run again" >&2
    exit 1
  fi
  echo "bootstrap: installing $* from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "$@" >&2
}

need_python
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[test]'

missing=()
have clamd || missing+=(clamav-daemon)
# The video tests make their reference media with Debian's ffmpeg CLI, and the video
# benchmark compares the farm with it; the farm itself uses PyAV's own FFmpeg.
have ffmpeg || missing+=(ffmpeg)
# The README's HTTP session, which the tests run as written, uses curl, jq and file.
for program in curl jq file; do have "$program" || missing+=("$program"); done
# The tests use the PostgreSQL on 127.0.0.1:5432 when one answers, else start their own.
postgres_binaries || missing+=(postgresql)
# The resumable-upload tests drive tus-js-client, the browsers' tus client, in Node.
have node || missing+=(nodejs)
have npm || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi
npm ci --prefix tests/e2e/tus_clients --no-audit --no-fund --loglevel=error >&2
echo "bootstrap: ready ($("$VENV/bin/python" -c 'import pyvips; print("libvips", pyvips.version(0), pyvips.version(1), pyvips.version(2))'))" >&2
