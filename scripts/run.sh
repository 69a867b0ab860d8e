#!/usr/bin/env bash
# `make run`: bring up a 3-node lab (built once, then cached) and open the console on it. The lab goes
# down when the console exits, unless KEEP_LAB=1. Extra console flags: make run ARGS="--read-only".
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "run: the lab needs root (systemd-nspawn, ostree deployments); run as root, or point the console at" >&2
  echo "run: real nodes: .venv/bin/lifsea-tui --inventory nodes.toml (see README.md)" >&2
  exit 2
fi
.venv/bin/lifsea-lab up --nodes "${NODES:-3}"
status=0
.venv/bin/lifsea-tui ${ARGS:-} || status=$?
if [[ ${KEEP_LAB:-0} != 1 ]]; then
  .venv/bin/lifsea-lab down
else
  echo "run: the lab stays up (KEEP_LAB=1); \`.venv/bin/lifsea-lab down\` stops it"
fi
exit $status
