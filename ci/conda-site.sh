#!/usr/bin/env bash
# Install conda 26.7.1 from its vendored source archive (../shared/vendor beside the checkout, or
# ENVMOD_VENDOR) as the test site's central conda, the way sites ship an anaconda3 or miniforge3:
#
#   $SITE/software/conda/26.7.1            the installation (a venv of /usr/bin/python3 with conda
#                                          and its dependencies from PyPI; conda-meta/ marks it as
#                                          conda's root prefix)
#     bin/conda, condabin/conda            `from conda.cli import main`, as conda's installers write
#                                          it (pip's console script refuses to run)
#     .condarc                             channels: the site's local channel; solver: classic (the
#                                          libmamba solver is not on PyPI); pkgs_dirs
#   $SITE/channel                          the site's local channel (tests/conda/channel.py; no
#                                          network to conda-forge), python over the plain site's
#                                          CPython ($ENVMOD_SITE, ci/site.sh first)
#   $SITE/modules/{lua,tcl}/conda/26.7.1   the module: CONDA_EXE, CONDA_PYTHON_EXE, condabin on PATH
#
# SITE is ENVMOD_CONDA_SITE (default /opt/envmod-conda-site). Idempotent: kept while its stamp (the
# archive's sha256) matches. Exits 3, after one line saying the conda tier skips, when the vendored
# archive is missing (ci/spack.sh's convention). Never copies conda's code into the repository.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENDOR=${ENVMOD_VENDOR:-$REPO/../shared/vendor}
SITE=${ENVMOD_CONDA_SITE:-/opt/envmod-conda-site}
CENTRAL_SITE=${ENVMOD_SITE:-/opt/envmod-site}
VERSION=26.7.1
TARBALL=conda-$VERSION.tar.xz
PREFIX=$SITE/software/conda/$VERSION
STAMP=$SITE/.envmod-conda-site
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

say() { echo "conda-site: $*"; }
die() { echo "conda-site: error: $*" >&2; exit 1; }

if [ ! -f "$VENDOR/$TARBALL" ]; then
    echo "conda-site: no $VENDOR/$TARBALL: the conda tier skips (provide ../shared/vendor or set ENVMOD_VENDOR)" >&2
    exit 3
fi
# The prefix lands unquoted-safe in Lua, Tcl, YAML and shebangs: allow only plain path characters.
case $SITE in
    /*) ;;
    *) die "ENVMOD_CONDA_SITE must be an absolute path, not '$SITE'" ;;
esac
if [[ ! $SITE =~ ^[A-Za-z0-9._/+-]+$ ]]; then
    die "ENVMOD_CONDA_SITE '$SITE' holds a character other than letters, digits and . _ / + - (it is written into modulefiles)"
fi
BASE_PYTHON=$CENTRAL_SITE/software/python/3.11.2/bin/python3
[ -x "$BASE_PYTHON" ] || die "the central site's Python $BASE_PYTHON is missing (run ci/site.sh first)"

SUM=$(sha256sum "$VENDOR/$TARBALL" | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SUM" ] && "$PREFIX/bin/conda" --version >/dev/null 2>&1; then
    say "up to date: $SITE (conda $VERSION)"
    exit 0
fi

if ! mkdir -p "$SITE" 2>/dev/null || [ ! -w "$SITE" ]; then
    $SUDO mkdir -p "$SITE" || die "cannot create $SITE"
    $SUDO chown "$(id -u):$(id -g)" "$SITE"
fi
# A venv's scripts name its prefix, so the installation is built in place; until the stamp is
# written it is incomplete, and a failed or interrupted run removes what it made.
rm -f "$STAMP"
rm -rf "$PREFIX" "$SITE/channel" "$SITE/modules/lua/conda" "$SITE/modules/tcl/conda"
WORK=$(mktemp -d "$SITE/.build.XXXXXX")
cleanup() {
    local rc=$?
    rm -rf "$WORK"
    if [ $rc != 0 ]; then
        rm -rf "$PREFIX" "$SITE/channel" "$SITE/modules/lua/conda" "$SITE/modules/tcl/conda"
    fi
}
trap cleanup EXIT

say "installing conda $VERSION into $PREFIX"
tar -xJf "$VENDOR/$TARBALL" -C "$WORK"
/usr/bin/python3 -m venv "$PREFIX" || die "python3 -m venv $PREFIX failed (apt-get install python3-venv)"
# conda's dependencies as its pyproject.toml names them, less menuinst (not on PyPI; desktop shortcuts)
"$PREFIX/bin/pip" install -q archspec 'backports.zstd>=1.3.0' boltons charset-normalizer \
    'conda-package-handling>=2.2.0' distro frozendict msgpack packaging platformdirs pluggy \
    pycosat requests 'ruamel.yaml<0.20' setuptools tqdm truststore \
    || die "pip install of conda's dependencies failed (no access to the Python package index?)"
SETUPTOOLS_SCM_PRETEND_VERSION=$VERSION "$PREFIX/bin/pip" install -q --no-deps "$WORK" \
    || die "pip install of $TARBALL failed"

# conda's own entry point, as its installers write it, in bin/ and in condabin/ (the only directory
# the module puts on PATH, so that the installation's python3 never shadows the site's Python)
mkdir -p "$PREFIX/condabin" "$PREFIX/conda-meta"
for exe in "$PREFIX/bin/conda" "$PREFIX/condabin/conda"; do
    rm -f "$exe"
    cat >"$exe" <<EOF
#!$PREFIX/bin/python
# -*- coding: utf-8 -*-
import sys

from conda.cli import main

if __name__ == "__main__":
    sys.exit(main())
EOF
    chmod 755 "$exe"
done
# conda-meta/history is how conda recognises its root prefix (where it reads .condarc)
: >"$PREFIX/conda-meta/history"

say "building the site's channel in $SITE/channel"
/usr/bin/python3 "$REPO/tests/conda/channel.py" --base-python "$BASE_PYTHON" "$WORK/channel" \
    || die "building the local channel failed"
mv "$WORK/channel" "$SITE/channel"

cat >"$PREFIX/.condarc" <<EOF
# the site's conda (written by envmod's ci/conda-site.sh)
channels:
  - file://$SITE/channel
  - file://$SITE/channel/label/mpi-external
default_channels: []
channel_priority: strict
solver: classic
pkgs_dirs:
  - $PREFIX/pkgs
  - ~/.conda/pkgs
auto_update_conda: false
notify_outdated_conda: false
EOF

mkdir -p "$SITE/modules/lua/conda" "$SITE/modules/tcl/conda"
cat >"$SITE/modules/lua/conda/$VERSION.lua" <<EOF
-- -*- lua -*-
-- conda/$VERSION: the site's conda (generated by envmod's ci/conda-site.sh)
help([[
conda $VERSION, the site's conda, with the site's channels in its .condarc.
Create environments with: conda create -p DIR PACKAGES
]])
whatis("Name: conda")
whatis("Version: $VERSION")
whatis("Category: tools")
whatis("Description: the conda package and environment manager")

local root = "$PREFIX"
setenv("CONDA_EXE", pathJoin(root, "bin/conda"))
setenv("CONDA_PYTHON_EXE", pathJoin(root, "bin/python"))
prepend_path("PATH", pathJoin(root, "condabin"))
EOF
cat >"$SITE/modules/tcl/conda/$VERSION" <<EOF
#%Module1.0
##
## conda/$VERSION: the site's conda (generated by envmod's ci/conda-site.sh)
##
proc ModulesHelp { } {
    puts stderr "conda $VERSION, the site's conda, with the site's channels in its .condarc."
    puts stderr "Create environments with: conda create -p DIR PACKAGES"
}
module-whatis "Name: conda"
module-whatis "Version: $VERSION"
module-whatis "Category: tools"
module-whatis "Description: the conda package and environment manager"

set root $PREFIX
setenv CONDA_EXE \$root/bin/conda
setenv CONDA_PYTHON_EXE \$root/bin/python
prepend-path PATH \$root/condabin
EOF

"$PREFIX/bin/conda" --version >/dev/null 2>&1 || die "$PREFIX/bin/conda does not run"
echo "$SUM" >"$STAMP"
say "done: $SITE (conda $VERSION; module conda/$VERSION in $SITE/modules/lua and $SITE/modules/tcl)"
