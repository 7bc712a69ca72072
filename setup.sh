#!/usr/bin/env bash
# One-step setup for real3d on Debian/Ubuntu with Python 3.11, then (unless --no-demo) the demo.
#   ./setup.sh              venv in .venv, pinned packages, espeak-ng; renders demo/astronaut_talking.mp4
#   ./setup.sh --no-demo    setup only (what CI uses)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
demo=1
for a in "$@"; do
  case "$a" in
    --no-demo) demo=0 ;;
    *) echo "setup.sh: unknown option $a (use --no-demo)" >&2; exit 2 ;;
  esac
done

# espeak-ng makes the demo's speech and the tests' speech (apt; needs root or sudo once)
if ! command -v espeak-ng >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq espeak-ng >/dev/null
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# exact pins; mediapipe goes in without its unused jax/jaxlib dependency (~380 MB)
.venv/bin/python -m pip install -q -r requirements.lock
.venv/bin/python -m pip install -q --no-deps mediapipe==0.10.14
.venv/bin/python -m pip install -q --no-deps -e .
.venv/bin/real3d doctor

if [ "$demo" = 1 ]; then
  .venv/bin/real3d demo -o demo/astronaut_talking.mp4
  echo "demo written to demo/astronaut_talking.mp4"
fi
