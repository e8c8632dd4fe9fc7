# Sourced by scripts/run and scripts/test: apt packages the project needs, then .venv with the project.
# Usage: need_apt PACKAGE... ; make_venv EXTRAS ("" or e.g. "[test]"; installs only when needed,
# then compiles the message catalogs that changed)
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

# The project is installed into .venv once per version of pyproject.toml: installing it on
# every start took 7 s and failed on a host with no package index. The install is editable, so
# code changes need none; a changed pyproject.toml (a dependency, an entry point) installs again.
# .venv/.installed holds lines "SHA256-OF-PYPROJECT EXTRAS" ("-" for none) of the installs made.
VENV_STAMP=.venv/.installed

pyproject_hash() {
  local line
  line=$(sha256sum pyproject.toml) && echo "${line%% *}"
}

# True when .venv holds the project as pyproject.toml is now, with EXTRAS (any extras will do
# for none: they come on top of the plain install).
venv_is_current() {
  local hash
  [ -x .venv/bin/python ] && [ -f "$VENV_STAMP" ] && hash=$(pyproject_hash) || return 1
  if [ -z "$1" ]; then
    grep -q "^$hash " "$VENV_STAMP"
  else
    grep -qxF "$hash $1" "$VENV_STAMP"
  fi
}

make_venv() {
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv 2>/dev/null || { need_apt python3-venv; rm -rf .venv; python3 -m venv .venv; }
  fi
  venv_is_current "$1" || install_project "$1" || return
  compile_catalogs
}

install_project() {
  local hash
  hash=$(pyproject_hash)  # before the install: a change made meanwhile installs again next time
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$1" || return  # no stamp
  { grep -s "^$hash " "$VENV_STAMP" || true; echo "$hash ${1:--}"; } >"$VENV_STAMP.new"
  mv "$VENV_STAMP.new" "$VENV_STAMP"  # the lines of an older pyproject.toml are dropped
}

# The message catalogs (app/locale/LANG/LC_MESSAGES/messages.po -> .mo; the .mo files are not
# committed). On every start, not only at an install: the install is stamped once per
# pyproject.toml and would miss an edited .po. Checking the times costs a few stat calls; a
# failed compile only warns, since the panel then compiles the .po in memory (app/i18n.py).
compile_catalogs() {
  local po stale=""
  for po in app/locale/*/LC_MESSAGES/*.po; do
    [ -e "$po" ] || continue  # no catalogs at all: the glob stays as written
    [ "${po%.po}.mo" -nt "$po" ] || stale=1
  done
  [ -n "$stale" ] || return 0
  .venv/bin/python -m babel.messages.frontend -q compile -d app/locale -D messages ||
    echo "warning: the message catalogs were not compiled; the panel compiles them at start" >&2
}
