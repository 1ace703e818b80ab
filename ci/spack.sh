#!/usr/bin/env bash
# Install Spack 1.1.0 and its recipes from the vendored source archives (../shared/vendor beside the
# checkout, or ENVMOD_VENDOR), outside the repository, then build the central Spack site on them
# (ci/spack-site.sh). Idempotent: an unpacked archive is kept while its sha256 stamp matches.
#
#   $ENVMOD_SPACK_TOOLS/spack            Spack 1.1.0 (SPACK_ROOT)
#   $ENVMOD_SPACK_TOOLS/spack-packages   the builtin recipes Spack 1.1.0 pins (v2025.11.0)
#   $ENVMOD_SPACK_TOOLS/python           the Python that runs Spack (SPACK_PYTHON): clingo, and what
#                                        envmod's library needs, since the extension imports it
#
# A user's own SPACK_ROOT wins: then nothing is unpacked and that Spack builds the site.
# Prints, as its last line, `SPACK_ROOT=... SPACK_PYTHON=...` for the caller to export; exits 3
# (after one line saying why the Spack tier will skip) when there is neither a SPACK_ROOT nor the
# vendored archives.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENDOR=${ENVMOD_VENDOR:-$REPO/../shared/vendor}
TOOLS=${ENVMOD_SPACK_TOOLS:-/opt/envmod-spack}
SPACK_TARBALL=spack-v1.1.0.tar.xz
RECIPES_TARBALL=spack-packages-v2025.11.0.tar.xz
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

say() { echo "spack: $*"; }
die() { echo "spack: error: $*" >&2; exit 1; }

# unpack ARCHIVE DEST: DEST holds exactly ARCHIVE's tree, stamped with its sha256
unpack() {
    local archive=$1 dest=$2 sum tmp
    sum=$(sha256sum "$archive" | cut -d' ' -f1)
    if [ -f "$dest/.envmod-unpacked" ] && [ "$(cat "$dest/.envmod-unpacked")" = "$sum" ]; then
        say "   up to date: $dest"
        return
    fi
    tmp=$(mktemp -d "$TOOLS/.unpack.XXXXXX")
    tar -xJf "$archive" -C "$tmp"
    echo "$sum" >"$tmp/.envmod-unpacked"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    say "   unpacked $(basename "$archive") into $dest"
}

if [ -z "${SPACK_ROOT:-}" ]; then
    if [ ! -f "$VENDOR/$SPACK_TARBALL" ] || [ ! -f "$VENDOR/$RECIPES_TARBALL" ]; then
        echo "spack: no SPACK_ROOT and no $VENDOR/$SPACK_TARBALL: the Spack tier skips (set SPACK_ROOT or provide ../shared/vendor)" >&2
        exit 3
    fi
    if ! mkdir -p "$TOOLS" 2>/dev/null || [ ! -w "$TOOLS" ]; then
        $SUDO mkdir -p "$TOOLS"
        $SUDO chown "$(id -u):$(id -g)" "$TOOLS"
    fi
    unpack "$VENDOR/$SPACK_TARBALL" "$TOOLS/spack"
    unpack "$VENDOR/$RECIPES_TARBALL" "$TOOLS/spack-packages"
    export SPACK_ROOT=$TOOLS/spack
    export SPACK_PACKAGES_REPO=$TOOLS/spack-packages
fi

# Spack's tools from Debian: patchelf (bootstrap status), gfortran (a complete gcc external).
missing=()
for p in patchelf gfortran; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi

if [ -z "${SPACK_PYTHON:-}" ]; then
    PY=$TOOLS/python
    if ! "$PY/bin/python" -c 'import clingo, yaml, jinja2, packaging' 2>/dev/null; then
        mkdir -p "$TOOLS"
        /usr/bin/python3 -m venv "$PY"
        "$PY/bin/pip" install -q 'clingo==5.8.3' pyyaml jinja2 packaging archspec \
            || die "pip install clingo==5.8.3 failed (no access to the Python package index?)"
    fi
    export SPACK_PYTHON=$PY/bin/python
fi

bash "$REPO/ci/spack-site.sh" >&2
echo "SPACK_ROOT=$SPACK_ROOT SPACK_PYTHON=$SPACK_PYTHON"
