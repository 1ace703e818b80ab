#!/usr/bin/env bash
# Set up everything envmod's demo and tests need on a fresh Debian 12 machine, idempotently:
# system packages, the small real central site (ci/site.sh), and envmod itself in .venv/.
# Sourced by ci/demo.sh and ci/test.sh; safe to run again (finished parts are skipped).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
die() { echo "setup: error: $*" >&2; exit 1; }
# apt_install PKG...: from Debian's archive, or one line saying it could not be had
apt_install() {
    $SUDO apt-get update -qq || die "apt-get update failed: is Debian's package archive reachable?"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

# envmod runs from its own venv over Debian's Python, so the tool never depends on the
# central Python it builds environments over.
if ! /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3-venv python3-pip
fi

bash "$REPO/ci/site.sh"

# The shells whose activate scripts the tests run (bash is there already).
missing=()
for p in zsh tcsh fish; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} = 0 ] || apt_install "${missing[@]}"

# A second MPI, as real sites have: the tests swap it in behind a module to prove envmod never
# reuses a build made against another MPI.
if ! dpkg -s libmpich-dev >/dev/null 2>&1; then
    apt_install libmpich-dev
fi

VENV="$REPO/.venv"
if [ ! -x "$VENV/bin/envmod" ] || [ "$REPO/pyproject.toml" -nt "$VENV/.envmod-installed" ]; then
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip || die "pip cannot reach the Python package index"
    "$VENV/bin/pip" install -q -e "$REPO[test]" || die "pip install -e $REPO[test] failed"
    touch "$VENV/.envmod-installed"
fi
echo "envmod: $("$VENV/bin/envmod" --version) in $VENV"
