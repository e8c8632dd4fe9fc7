# Sourced by scripts/run and scripts/test: apt packages the project needs, then .venv with the project.
# Usage: need_apt PACKAGE... ; make_venv EXTRAS
set -euo pipefail

need_apt() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing with apt: ${missing[*]}" >&2
  $sudo apt-get update -qq
  # Tests start their own memcached and nginx: keep the packages' system services from
  # starting (a busy port 80 would otherwise fail the install).
  local policy=/usr/sbin/policy-rc.d added=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && added=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  local status=$?
  [ -z "$added" ] || $sudo rm -f "$policy"
  return $status
}

make_venv() {
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv 2>/dev/null || { need_apt python3-venv; rm -rf .venv; python3 -m venv .venv; }
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$1"
}
