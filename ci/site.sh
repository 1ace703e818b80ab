#!/usr/bin/env bash
# Stand up a small but real central HPC site on a Debian 12 (bookworm) machine, the layer that
# envmod's users build their personal environments on:
#
#   $SITE/software/python/3.11.2   CPython 3.11.2 compiled from source, numpy 2.x as a central package
#   $SITE/software/openmpi/4.1.4   Debian's Open MPI 4.1.4, presented as a site install (file symlinks)
#   $SITE/software/hdf5/1.10.8     Debian's parallel (Open MPI) HDF5 1.10.8, likewise
#   $SITE/modules/lua              Lmod modulefiles:  python/3.11, openmpi/4.1.4, hdf5/1.10.8
#   $SITE/modules/tcl              the same three as Environment Modules (Tcl) modulefiles
#   $SITE/envmodules               Environment Modules 5.2.0, unpacked (not installed: it conflicts
#                                  with Debian's lmod package, and the tests need both tools)
#   $SITE/sources, $SITE/logs      the Python source tarball; build logs and timings
#
# Usage:  bash ci/site.sh            (root, or a user with sudo for apt-get)
#         ENVMOD_SITE=/some/dir bash ci/site.sh
# Then:   source ci/modules.sh; use_lmod (or use_envmodules); module load python/3.11 openmpi/4.1.4 hdf5/1.10.8
#
# Idempotent: every part checks whether it is already done and skips quickly (the Python build
# above all: 1.5 to 5 minutes on 2 cores; a re-run takes seconds). Modulefiles and symlink trees
# are cheap, so they are regenerated on every run but replaced only where they differ: a change
# to this script reaches an existing site, and a site in use is not disturbed by a re-run.
set -euo pipefail

SITE=${ENVMOD_SITE:-/opt/envmod-site}
PY_VERSION=3.11.2
# Debian's orig tarball is upstream's Python-3.11.2.tgz byte for byte (a .tar.gz, not .xz);
# this sha256 is the one upstream publishes for it, and the one in Debian's .dsc.
PY_TARBALL=python3.11_${PY_VERSION}.orig.tar.gz
PY_SHA256=2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849
NUMPY_SPEC='numpy>=2,<3'
MPI_VERSION=4.1.4
HDF5_VERSION=1.10.8
# The source packages of the Python above live in bookworm, whatever the machine's codename.
SRC_SUITE=bookworm

PY_PREFIX=$SITE/software/python/$PY_VERSION
MPI_PREFIX=$SITE/software/openmpi/$MPI_VERSION
HDF5_PREFIX=$SITE/software/hdf5/$HDF5_VERSION
LOGS=$SITE/logs

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive

say() { echo "site: $*"; }
die() { echo "site: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# 0. System packages. Checked with dpkg first, so a re-run does not touch apt at all.
# ---------------------------------------------------------------------------------------------
APT_PACKAGES=(
    lmod tcl                                   # the two module tools (Environment Modules is unpacked below)
    openmpi-bin libopenmpi-dev                 # the MPI the site wraps
    libhdf5-openmpi-dev                        # parallel HDF5 built against that MPI
    build-essential pkg-config                 # to build Python
    # Python's optional modules: ssl, zlib, ctypes, bz2, lzma, sqlite3, uuid, readline
    libssl-dev zlib1g-dev libffi-dev libbz2-dev liblzma-dev libsqlite3-dev uuid-dev libreadline-dev
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
APT_UPDATED=
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    $SUDO apt-get update -qq || die "apt-get update failed: is Debian's package archive reachable?"
    APT_UPDATED=1
    $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi

MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
LIBDIR=/usr/lib/$MULTIARCH

# A non-root user gets the site directory made (with sudo) and handed over once.
if ! mkdir -p "$SITE" 2>/dev/null || [ ! -w "$SITE" ]; then
    $SUDO mkdir -p "$SITE"
    $SUDO chown "$(id -u):$(id -g)" "$SITE"
fi
mkdir -p "$SITE/software" "$SITE/sources" "$LOGS"
# Two runs at once (say ci/demo.sh and ci/test.sh) take turns instead of building twice.
exec 9>"$SITE/.site.lock"
flock 9
WORK=$(mktemp -d "${TMPDIR:-/tmp}/envmod-site.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------------------------
# 1. Python 3.11.2 from source
# ---------------------------------------------------------------------------------------------

# The mirror this machine already uses for bookworm binaries (deb822 *.sources or one-line
# *.list), so the deb-src entry names no host of its own and follows whatever mirror is set up.
bookworm_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        case $f in */envmod-*) continue ;; esac
        awk -v suite="$SRC_SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = uris = suites = ""; enabled = 1
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^Types:/)   { types = $i;  sub(/^Types:[ \t]*/, "", types) }
                    if ($i ~ /^URIs:/)    { uris = $i;   sub(/^URIs:[ \t]*/, "", uris) }
                    if ($i ~ /^Suites:/)  { suites = $i; sub(/^Suites:[ \t]*/, "", suites) }
                    if ($i ~ /^Enabled:[ \t]*no/) enabled = 0
                }
                if (enabled && (" " types " ") ~ / deb / && (" " suites " ") ~ (" " suite " ")) {
                    split(uris, u, /[ \t]+/); print u[1]; exit
                }
            }' "$f"
    done
    # One-line format: deb [options] URI SUITE COMPONENTS...
    local l
    for l in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$l" ] || continue
        sed -E 's/\[[^]]*\]//' "$l" | awk -v suite="$SRC_SUITE" '$1 == "deb" && $3 == suite { print $2 }'
    done
    return 0
}

# deb-src for bookworm in a file of its own (the machine's own sources stay untouched). Skipped
# when apt already knows the source package (some other deb-src entry provides it).
ensure_deb_src() {
    local file=/etc/apt/sources.list.d/envmod-$SRC_SUITE-src.sources
    apt-cache showsrc python3.11 2>/dev/null | grep -q "^Version: $PY_VERSION-" && return 0
    local mirror
    mirror=$(bookworm_mirror)
    mirror=${mirror%%$'\n'*}
    [ -n "$mirror" ] || die "no apt source for $SRC_SUITE found in /etc/apt; cannot add a deb-src entry"
    local text
    text=$(printf '%s\n' "# Added by envmod's ci/site.sh: source packages (the Python $PY_VERSION tarball of the test site)" \
        "Types: deb-src" "URIs: $mirror" "Suites: $SRC_SUITE" "Components: main" \
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg")
    if [ "$(cat "$file" 2>/dev/null)" != "$text" ]; then
        say "adding deb-src for $SRC_SUITE ($file)"
        printf '%s\n' "$text" | $SUDO tee "$file" >/dev/null
    fi
    $SUDO apt-get update -qq
}

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$PY_SHA256" ]; }

fetch_python_source() {
    local dest=$SITE/sources/$PY_TARBALL
    sha_ok "$dest" && return 0
    ensure_deb_src
    say "downloading $PY_TARBALL (apt-get source --download-only python3.11)"
    mkdir -p "$WORK/src"
    # apt-get may exit non-zero (the newest .dsc named by the index can be missing from the
    # mirror) although the orig tarball, shared by every Debian revision, arrives: judge the
    # result by the tarball's checksum, not by apt's exit code.
    (cd "$WORK/src" && apt-get source --download-only python3.11 >"$LOGS/python-source-download.log" 2>&1) || true
    sha_ok "$WORK/src/$PY_TARBALL" \
        || die "$PY_TARBALL did not arrive or has the wrong sha256 (see $LOGS/python-source-download.log)"
    mv "$WORK/src/$PY_TARBALL" "$dest"
}

# The modules a user expects of a Python; missing system headers make CPython skip them silently.
PY_CHECK='import ssl, zlib, ctypes, sqlite3, bz2, lzma, readline, uuid, _uuid
ctypes.CDLL(None)
sqlite3.connect(":memory:").execute("select 1")
assert lzma.decompress(lzma.compress(b"x")) == b"x" and bz2.decompress(bz2.compress(b"x")) == b"x"
import sys; print(sys.version.split()[0], ssl.OPENSSL_VERSION)'

python_ok() {
    [ -f "$PY_PREFIX/.envmod-site-complete" ] && [ -x "$PY_PREFIX/bin/python3" ] \
        && [ "$("$PY_PREFIX/bin/python3" -I -c 'import platform; print(platform.python_version())' 2>/dev/null)" = "$PY_VERSION" ] \
        && "$PY_PREFIX/bin/python3" -I -c "$PY_CHECK" >/dev/null 2>&1
}

build_python() {
    if python_ok; then
        say "python $PY_VERSION: already built in $PY_PREFIX"
        return 0
    fi
    fetch_python_source
    # A prefix without the completion mark is a broken earlier attempt: start clean.
    rm -rf "$PY_PREFIX"
    local log=$LOGS/python-$PY_VERSION-build.log start=$SECONDS
    say "python $PY_VERSION: building (log: $log; a few minutes)"
    tar -xzf "$SITE/sources/$PY_TARBALL" -C "$WORK"
    # Plain configure: no --enable-optimizations/--with-lto (PGO runs the test suite inside the
    # build and would multiply its time; a test site needs a real Python, not a fast one),
    # static libpython (so nothing needs LD_LIBRARY_PATH), pip bundled via ensurepip.
    # A Python of the caller's (pyenv, a loaded module, a venv) must not leak into the build.
    if ! (unset PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE VIRTUAL_ENV
            cd "$WORK/Python-$PY_VERSION" \
            && ./configure --prefix="$PY_PREFIX" --with-ensurepip=install \
            && make -j"$(nproc)" \
            && make install) >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "python build failed (full log: $log)"
    fi
    # CPython only warns about optional modules it could not build; this makes it fatal.
    if ! "$PY_PREFIX/bin/python3" -I -c "$PY_CHECK" >>"$log" 2>&1; then
        grep -A3 -i "necessary bits\|failed to build" "$log" >&2 || true
        die "python built, but a standard module (ssl, zlib, ctypes, sqlite3, bz2, lzma, readline, uuid) is missing"
    fi
    # The unversioned names that site installs (EasyBuild's, for one) provide next to python3/pip3.
    ln -sfn python3 "$PY_PREFIX/bin/python"
    ln -sfn pip3 "$PY_PREFIX/bin/pip"
    local took=$((SECONDS - start))
    echo "$took" >"$LOGS/python-$PY_VERSION-build.seconds"
    echo "./configure --prefix=$PY_PREFIX --with-ensurepip=install; built in ${took}s" >"$PY_PREFIX/.envmod-site-complete"
    say "python $PY_VERSION: built and installed in ${took}s ($("$PY_PREFIX/bin/python3" -I -c "$PY_CHECK"))"
}

# numpy as a central package: what users of a site find already installed next to its Python.
# -I (isolated): neither the caller's PYTHON* variables nor a user site-packages count.
install_numpy() {
    local py=$PY_PREFIX/bin/python3
    if "$py" -I -c 'import numpy, sys; sys.exit(not numpy.__version__.startswith("2."))' 2>/dev/null; then
        say "numpy: $("$py" -I -c 'import numpy; print(numpy.__version__)') already central"
        return 0
    fi
    say "numpy: installing a binary wheel into the central Python"
    PIP_REQUIRE_VIRTUALENV=0 "$py" -I -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        --only-binary=:all: "$NUMPY_SPEC" >>"$LOGS/numpy-install.log" 2>&1 \
        || { tail -n 20 "$LOGS/numpy-install.log" >&2; die "numpy install failed (log: $LOGS/numpy-install.log)"; }
    "$py" -I -c 'import numpy; numpy.ones(3).sum()' || die "numpy does not import"
    say "numpy: $("$py" -I -c 'import numpy; print(numpy.__version__)') installed"
}

# ---------------------------------------------------------------------------------------------
# 2./3. Open MPI and parallel HDF5: Debian's builds, presented as site installs.
# A real site has its own prefix per package; here that prefix holds one symlink per file
# pointing at Debian's files. Directories are real: a search path (bin, lib, include) that is
# itself a symlink to somewhere outside the prefix confuses module tools and path checks.
# Cheap, so rebuilt on every run in a staging directory, swapped in only if it differs.
# ---------------------------------------------------------------------------------------------

# link_files DEST FILE...: DEST/basename(FILE) -> the real file behind FILE (alternatives and
# versioned-library chains resolved).
link_files() {
    local dest=$1 f
    shift
    mkdir -p "$dest"
    for f in "$@"; do ln -sfn "$(readlink -f "$f")" "$dest/${f##*/}"; done
}

# link_tree SRC DEST: the directory tree of SRC re-created under DEST, one symlink per file.
link_tree() {
    cp -rsT "$(readlink -f "$1")" "$2"
}

# The files a Debian package installs directly in DIR whose names match GLOB.
pkg_files() {  # pkg_files DIR GLOB PACKAGE...
    local dir=$1 glob=$2 f
    shift 2
    dpkg -L "$@" | grep -E "^$dir/[^/]+\$" | sort -u | while read -r f; do
        # shellcheck disable=SC2254  # GLOB is a pattern on purpose
        case ${f##*/} in $glob) echo "$f" ;; esac
    done
}

tree_listing() { (cd "$1" && find . -printf '%P %y %l\n' | LC_ALL=C sort); }

# swap_in STAGING PREFIX: replace PREFIX by STAGING unless both hold the same links (then the
# site in use is not touched at all); otherwise PREFIX is missing only between two renames.
swap_in() {
    if [ -d "$2" ] && [ "$(tree_listing "$1")" = "$(tree_listing "$2")" ]; then
        rm -rf "$1"
        return 0
    fi
    rm -rf "$2.old"
    [ ! -e "$2" ] || mv "$2" "$2.old"
    mv "$1" "$2"
    rm -rf "$2.old"
}

wrap_openmpi() {
    local stage=$MPI_PREFIX.staging f name
    rm -rf "$stage"
    mkdir -p "$stage/bin"
    # bin/: Debian's MPI commands under their plain names. mpicc, mpirun, ... in /usr/bin go
    # through /etc/alternatives (which could point at another MPI), so link NAME.openmpi
    # instead; the compiler wrappers key their behaviour on the name they are called by, and
    # /usr/share/openmpi has wrapper data for the plain names too.
    for f in $(pkg_files /usr/bin '*' openmpi-bin libopenmpi-dev); do
        name=${f##*/}
        case $name in
            *.openmpi) ln -sfn "$f" "$stage/bin/${name%.openmpi}" ;;
            *) [ -e "$stage/bin/$name" ] || ln -sfn "$f" "$stage/bin/$name" ;;
        esac
    done
    # lib/: the shared libraries (libmpi*, libopen-pal/-rte, liboshmem, libmca_common_*, ...),
    # each soname and development name as its own link; plus the pkg-config files. Components
    # (openmpi3/) are found by the libraries themselves through their compiled-in path.
    # shellcheck disable=SC2046
    link_files "$stage/lib" $(pkg_files "$LIBDIR" 'lib*.so*' libopenmpi3 libopenmpi-dev) \
        "$LIBDIR"/openmpi/lib/lib*.so
    link_files "$stage/lib/pkgconfig" "$LIBDIR"/openmpi/lib/pkgconfig/*.pc
    link_tree "$LIBDIR/openmpi/include" "$stage/include"

    local version
    version=$("$stage/bin/ompi_info" --parsable 2>/dev/null | sed -n 's/^ompi:version:full://p')
    [ "$version" = "$MPI_VERSION" ] || die "ompi_info reports Open MPI '$version', expected $MPI_VERSION"
    "$stage/bin/mpicc" -show >/dev/null || die "mpicc wrapper does not work"
    swap_in "$stage" "$MPI_PREFIX"
    say "openmpi $MPI_VERSION: $MPI_PREFIX ($(find "$MPI_PREFIX/bin" -type l | wc -l) commands, $(find "$MPI_PREFIX/lib" -maxdepth 1 -type l | wc -l) library links)"
}

wrap_hdf5() {
    local stage=$HDF5_PREFIX.staging f name debdir=$LIBDIR/hdf5/openmpi
    rm -rf "$stage"
    # bin/: h5pcc, h5pfc, h5c++ (Debian suffixes them .openmpi; the plain names go through
    # /etc/alternatives and may point at the serial flavour).
    mkdir -p "$stage/bin"
    for f in $(pkg_files /usr/bin '*.openmpi' libhdf5-openmpi-dev); do
        name=${f##*/}
        ln -sfn "$f" "$stage/bin/${name%.openmpi}"
    done
    # lib/: Debian's names (libhdf5_openmpi.so.103, ... : the sonames programs load at run time)
    # and the upstream names build systems look for (libhdf5.so, libhdf5_hl.so, ...: h5py's
    # HDF5_DIR mode wants lib/libhdf5.so), which Debian keeps in hdf5/openmpi/.
    link_files "$stage/lib" "$LIBDIR"/libhdf5_openmpi*.so* \
        "$debdir"/lib*.so "$debdir"/lib*.a "$debdir"/libhdf5.settings
    link_tree "$debdir/include" "$stage/include"

    if [ ! -f "$stage/include/hdf5.h" ] || [ ! -e "$stage/lib/libhdf5.so" ] || [ ! -e "$stage/lib/libhdf5_hl.so" ]; then
        die "HDF5 wrapper lacks include/hdf5.h, lib/libhdf5.so or lib/libhdf5_hl.so"
    fi
    grep -q '^#define H5_HAVE_PARALLEL 1' "$stage/include/H5pubconf.h" || die "Debian's HDF5 in $debdir is not parallel"
    "$stage/bin/h5pcc" -showconfig | grep -q 'Parallel HDF5: yes' || die "h5pcc -showconfig does not say Parallel HDF5: yes"
    swap_in "$stage" "$HDF5_PREFIX"
    say "hdf5 $HDF5_VERSION: $HDF5_PREFIX (parallel, Open MPI)"
}

# ---------------------------------------------------------------------------------------------
# 4. Modulefiles, one Lmod (Lua) tree and one Environment Modules (Tcl) tree.
# ---------------------------------------------------------------------------------------------

# write_if_changed FILE < text: keeps the file (and its mtime) when the text is the same.
write_if_changed() {
    local text
    text=$(cat)
    mkdir -p "$(dirname "$1")"
    [ -f "$1" ] && [ "$(cat "$1")" = "$text" ] && return 0
    printf '%s\n' "$text" >"$1.tmp"
    mv "$1.tmp" "$1"
}

write_modules() {
    local lua=$SITE/modules/lua tcl=$SITE/modules/tcl
    # Paths go into Lua "..." strings and bare Tcl words unquoted, so keep them plain.
    case $SITE in *[!A-Za-z0-9/._+-]*) die "ENVMOD_SITE must be a plain path (letters, digits, / . _ + -): $SITE" ;; esac

    write_if_changed "$lua/python/3.11.lua" <<LUA
-- -*- lua -*-
-- python/3.11: the site's central Python (generated by envmod's ci/site.sh)
help([[
Python $PY_VERSION, compiled from source for this site.

Central packages: numpy.
For packages of your own, make a virtual environment over this Python
(python3 -m venv --system-site-packages DIR, or envmod) rather than pip install --user.
]])
whatis("Name: Python")
whatis("Version: $PY_VERSION")
whatis("Category: lang")
whatis("Description: the Python programming language, with numpy as central package")
whatis("URL: https://www.python.org")

local root = "$PY_PREFIX"
prepend_path("PATH", pathJoin(root, "bin"))
prepend_path("MANPATH", pathJoin(root, "share/man"))
prepend_path("PKG_CONFIG_PATH", pathJoin(root, "lib/pkgconfig"))
LUA

    write_if_changed "$lua/openmpi/$MPI_VERSION.lua" <<LUA
-- -*- lua -*-
-- openmpi/$MPI_VERSION: the site's MPI (generated by envmod's ci/site.sh)
help([[
Open MPI $MPI_VERSION: MPI library, compiler wrappers (mpicc, mpicxx, mpif90) and mpirun.

Build MPI programs with the wrappers (e.g. MPICC=mpicc for mpi4py); run them with mpirun.
]])
whatis("Name: Open MPI")
whatis("Version: $MPI_VERSION")
whatis("Category: mpi")
whatis("Description: Open MPI message passing library and tools")
whatis("URL: https://www.open-mpi.org")

family("mpi")

local root = "$MPI_PREFIX"
prepend_path("PATH", pathJoin(root, "bin"))
prepend_path("LD_LIBRARY_PATH", pathJoin(root, "lib"))
prepend_path("CPATH", pathJoin(root, "include"))
prepend_path("PKG_CONFIG_PATH", pathJoin(root, "lib/pkgconfig"))
setenv("MPI_HOME", root)
setenv("OPENMPI_ROOT", root)
LUA

    write_if_changed "$lua/hdf5/$HDF5_VERSION.lua" <<LUA
-- -*- lua -*-
-- hdf5/$HDF5_VERSION: the site's parallel HDF5, built with openmpi/$MPI_VERSION (generated by envmod's ci/site.sh)
help([[
HDF5 $HDF5_VERSION, parallel (MPI-IO) build against Open MPI $MPI_VERSION.

Compile with h5pcc; for h5py from source: HDF5_DIR and HDF5_MPI are set, use CC=mpicc.
Loads openmpi/$MPI_VERSION.
]])
whatis("Name: HDF5")
whatis("Version: $HDF5_VERSION")
whatis("Category: io")
whatis("Description: HDF5 data model, library and file format; parallel build")
whatis("URL: https://www.hdfgroup.org")

depends_on("openmpi/$MPI_VERSION")

local root = "$HDF5_PREFIX"
prepend_path("PATH", pathJoin(root, "bin"))
prepend_path("LD_LIBRARY_PATH", pathJoin(root, "lib"))
setenv("HDF5_DIR", root)
setenv("HDF5_ROOT", root)
setenv("HDF5_MPI", "ON")
LUA

    write_if_changed "$tcl/python/3.11" <<TCL
#%Module1.0
##
## python/3.11: the site's central Python (generated by envmod's ci/site.sh)
##
proc ModulesHelp { } {
    puts stderr "Python $PY_VERSION, compiled from source for this site."
    puts stderr ""
    puts stderr "Central packages: numpy."
    puts stderr "For packages of your own, make a virtual environment over this Python"
    puts stderr "(python3 -m venv --system-site-packages DIR, or envmod) rather than pip install --user."
}
module-whatis "Name: Python"
module-whatis "Version: $PY_VERSION"
module-whatis "Category: lang"
module-whatis "Description: the Python programming language, with numpy as central package"
module-whatis "URL: https://www.python.org"

set root $PY_PREFIX
prepend-path PATH \$root/bin
prepend-path MANPATH \$root/share/man
prepend-path PKG_CONFIG_PATH \$root/lib/pkgconfig
TCL

    write_if_changed "$tcl/openmpi/$MPI_VERSION" <<TCL
#%Module1.0
##
## openmpi/$MPI_VERSION: the site's MPI (generated by envmod's ci/site.sh)
##
proc ModulesHelp { } {
    puts stderr "Open MPI $MPI_VERSION: MPI library, compiler wrappers (mpicc, mpicxx, mpif90) and mpirun."
    puts stderr ""
    puts stderr "Build MPI programs with the wrappers (e.g. MPICC=mpicc for mpi4py); run them with mpirun."
}
module-whatis "Name: Open MPI"
module-whatis "Version: $MPI_VERSION"
module-whatis "Category: mpi"
module-whatis "Description: Open MPI message passing library and tools"
module-whatis "URL: https://www.open-mpi.org"

# One MPI at a time (Environment Modules 5.1+; a second mpi module is refused or swapped).
family mpi

set root $MPI_PREFIX
prepend-path PATH \$root/bin
prepend-path LD_LIBRARY_PATH \$root/lib
prepend-path CPATH \$root/include
prepend-path PKG_CONFIG_PATH \$root/lib/pkgconfig
setenv MPI_HOME \$root
setenv OPENMPI_ROOT \$root
TCL

    write_if_changed "$tcl/hdf5/$HDF5_VERSION" <<TCL
#%Module1.0
##
## hdf5/$HDF5_VERSION: the site's parallel HDF5, built with openmpi/$MPI_VERSION (generated by envmod's ci/site.sh)
##
proc ModulesHelp { } {
    puts stderr "HDF5 $HDF5_VERSION, parallel (MPI-IO) build against Open MPI $MPI_VERSION."
    puts stderr ""
    puts stderr "Compile with h5pcc; for h5py from source: HDF5_DIR and HDF5_MPI are set, use CC=mpicc."
    puts stderr "Loads openmpi/$MPI_VERSION."
}
module-whatis "Name: HDF5"
module-whatis "Version: $HDF5_VERSION"
module-whatis "Category: io"
module-whatis "Description: HDF5 data model, library and file format; parallel build"
module-whatis "URL: https://www.hdfgroup.org"

# With Environment Modules 5's automated module handling (on by default), prereq loads
# openmpi/$MPI_VERSION when it is not loaded yet, unloads it again with this module if it was
# loaded only for it, and unloading openmpi unloads this module too. depends-on (5.1+) does
# the same for one module; prereq also works in 4.x.
prereq openmpi/$MPI_VERSION

set root $HDF5_PREFIX
prepend-path PATH \$root/bin
prepend-path LD_LIBRARY_PATH \$root/lib
setenv HDF5_DIR \$root
setenv HDF5_ROOT \$root
setenv HDF5_MPI ON
TCL
    say "modules: $lua (Lmod), $tcl (Environment Modules)"
}

# ---------------------------------------------------------------------------------------------
# 5. Environment Modules 5.2, unpacked: Debian's lmod and environment-modules packages conflict,
# and envmod is tested against both, so this one runs from its unpacked .deb:
#   tclsh $SITE/envmodules/usr/lib/<multiarch>/modulecmd.tcl bash load ...
# ---------------------------------------------------------------------------------------------
ENVMODULES=$SITE/envmodules
MODULECMD=$ENVMODULES/usr/lib/$MULTIARCH/modulecmd.tcl

envmodules_version() { tclsh "$MODULECMD" bash --version 2>&1 | sed -n 's/^Modules Release \([^ ]*\).*/\1/p'; }

unpack_envmodules() {
    if [ -f "$MODULECMD" ] && [ -n "$(envmodules_version)" ]; then
        say "environment modules $(envmodules_version): already unpacked in $ENVMODULES"
        return 0
    fi
    mkdir -p "$ENVMODULES"
    rm -f "$ENVMODULES"/environment-modules_*.deb
    # apt-get download writes into the current directory; a fresh machine may need the index first.
    if ! (cd "$ENVMODULES" && apt-get download -q environment-modules >/dev/null 2>&1); then
        [ -n "$APT_UPDATED" ] || $SUDO apt-get update -qq
        (cd "$ENVMODULES" && apt-get download -q environment-modules >/dev/null) || die "apt-get download environment-modules failed"
    fi
    local deb
    deb=$(ls "$ENVMODULES"/environment-modules_*.deb)
    dpkg-deb -x "$deb" "$ENVMODULES"
    [ -n "$(envmodules_version)" ] || die "unpacked $deb, but '$MODULECMD --version' does not work"
    say "environment modules $(envmodules_version): unpacked in $ENVMODULES"
}

build_python
install_numpy
wrap_openmpi
wrap_hdf5
write_modules
unpack_envmodules
echo "$SITE"
