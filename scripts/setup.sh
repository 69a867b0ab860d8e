#!/usr/bin/env bash
# Everything the project needs on a fresh Debian machine: the system packages (as root, with apt) and a
# virtual environment with the locked Python dependencies. Safe to run again; it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  ostree gir1.2-ostree-1.0 python3-gi python3-venv   # ostree CLI and libostree for the agent
  systemd-container debootstrap runc umoci            # lab nodes (nspawn), their image, ops containers, the agent image
  etcd-server                                         # the fleet controller's store (the lab runs one)
  prometheus                                          # scrapes lab agents in the metrics test (promtool: the rules)
  chromium                                            # drives `lifsea-tui serve` in the browser test (headless)
  e2fsprogs procps iproute2 tmux                      # chattr for lab clean-up, pgrep, tmux for trying the console
)

# Only for `make bench`: OpenSSH is the peer the ops shell is measured against (nodes have no sshd).
if [[ ${1:-} == --bench ]]; then
  APT_PACKAGES+=(openssh-server openssh-client)
fi

missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # No package may start a system service (etcd, sshd): the lab, the tests and the benchmarks run
    # their own, on ports of their own choosing.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: not root, so these Debian packages stay missing: ${missing[*]}" >&2
    echo "setup: the lab and the tests that need them will say so and skip" >&2
  fi
fi

# Debian's python3, so that libostree's bindings (python3-gi) are importable from the venv.
PYTHON=/usr/bin/python3
[[ -x $PYTHON ]] || PYTHON=$(command -v python3)
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv --system-site-packages .venv
fi
stamp=.venv/.lifsea-lock
if [[ ! -f $stamp ]] || ! cmp -s requirements.lock "$stamp"; then
  echo "setup: installing locked Python dependencies"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
  cp requirements.lock "$stamp"
fi
.venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . >/dev/null
