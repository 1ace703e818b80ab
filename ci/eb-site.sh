#!/usr/bin/env bash
# Set up a central EasyBuild 5.4.1 site on a Debian 12 machine, the way an HPC centre running
# EasyBuild would, without downloading any software source:
#   OpenMPI/4.1.4   Debian's OpenMPI through the stock SystemMPI easyblock
#   HDF5/1.10.8     Debian's parallel HDF5 (openmpi flavour), its files linked into a Bundle
#   Python/3.11.2   built by EasyBuild (EB_Python) from Debian's orig tarball of CPython 3.11.2
# with Lmod (Lua) modules, plus envmod's UserEnv easyblock and library, so that users build
# personal environments with `eb MyEnv-1.0.eb` on top of it (easyblocks/README.md).
#
# Layout (SITE = $ENVMOD_EB_SITE, default /opt/envmod-eb-site):
#   SITE/easybuild/venv      EasyBuild 5.4.1 (and the envmod library) in a venv over /usr/bin/python3
#   SITE/bin/eb              EasyBuild with the site's configuration (SITE/etc/easybuild.cfg)
#   SITE/etc/profile.sh      source it: Lmod, the site's modules, SITE/bin on PATH
#   SITE/easyconfigs, SITE/easyblocks, SITE/sources, SITE/software, SITE/modules/all
#
# Idempotent: finished parts are skipped (software already installed, files unchanged), so a
# second run takes seconds. Each step is timed; the summary is printed at the end.
#
# Environment:
#   ENVMOD_EB_SITE       where the site goes (default /opt/envmod-eb-site)
#   ENVMOD_EB_USER       the unprivileged user made for the tests (default envmodeb; "" = none)
#   ENVMOD_SITE          the plain envmod site of ci/site.sh, whose Python tarball is reused
#                        when present (default /opt/envmod-site)
#   EB_PARALLEL          build parallelism (default: the number of cores)
set -euo pipefail

die() { echo "eb-site: error: $*" >&2; exit 1; }
say() { echo "eb-site: $*"; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SITE=${ENVMOD_EB_SITE:-/opt/envmod-eb-site}
TEST_USER=${ENVMOD_EB_USER-envmodeb}
PLAIN_SITE=${ENVMOD_SITE:-/opt/envmod-site}
EB_VERSION=5.4.1
OPENMPI_VERSION=4.1.4
HDF5_VERSION=1.10.8
PY_VERSION=3.11.2
# CPython 3.11.2's release tarball; Debian's orig tarball is the same file byte for byte.
PY_SHA256=2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849
DEB_HDF5=/usr/lib/x86_64-linux-gnu/hdf5/openmpi
VENV=$SITE/easybuild/venv
CFG=$SITE/etc/easybuild.cfg
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
umask 022
# A non-root user gets the site directory made (with sudo) and handed over once.
if ! mkdir -p "$SITE" 2>/dev/null || [ ! -w "$SITE" ]; then
    $SUDO mkdir -p "$SITE" || die "cannot create $SITE"
    $SUDO chown "$(id -u):$(id -g)" "$SITE"
fi

# ---------------------------------------------------------------- timing
STEP_NAMES=()
STEP_TIMES=()
now() { date +%s.%N; }
run_step() {
    local name=$1 t0 dt
    shift
    say "== $name"
    t0=$(now)
    "$@"
    dt=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    STEP_NAMES+=("$name")
    STEP_TIMES+=("$dt")
    say "   $name: ${dt}s"
}

# write_if_changed PATH [MODE]: write stdin to PATH unless it already holds exactly that
write_if_changed() {
    local dest=$1 mode=${2:-644} tmp
    mkdir -p "$(dirname "$dest")"
    tmp=$(mktemp "$dest.XXXXXX")
    cat >"$tmp"
    if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
    else
        chmod "$mode" "$tmp"
        mv -f "$tmp" "$dest"
        say "   wrote: $dest"
    fi
}

# ---------------------------------------------------------------- system packages
APT_PACKAGES=(lmod openmpi-bin libopenmpi-dev libhdf5-openmpi-dev python3-venv build-essential dpkg-dev
              libssl-dev libffi-dev zlib1g-dev libbz2-dev liblzma-dev libsqlite3-dev libreadline-dev
              libncurses-dev uuid-dev)
system_packages() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "   all present"
        return
    fi
    say "   installing: ${missing[*]}"
    $SUDO apt-get update -qq || die "apt-get update failed: is Debian's package archive reachable?"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}

detect_versions() {
    local ompi hdf5
    ompi=$(ompi_info --version 2>/dev/null | sed -n 's/^Open MPI v\([0-9.]*\).*/\1/p')
    [ "$ompi" = "$OPENMPI_VERSION" ] || die "ompi_info reports Open MPI '$ompi', this site wraps $OPENMPI_VERSION"
    hdf5=$(sed -n 's/^[[:space:]]*HDF5 Version:[[:space:]]*\([0-9.]*\).*/\1/p' "$DEB_HDF5/libhdf5.settings")
    [ "$hdf5" = "$HDF5_VERSION" ] || die "$DEB_HDF5 holds HDF5 '$hdf5', this site wraps $HDF5_VERSION"
    grep -q "define H5_HAVE_PARALLEL 1" "$DEB_HDF5/include/H5pubconf.h" || die "$DEB_HDF5 is not a parallel HDF5"
}

# ---------------------------------------------------------------- EasyBuild itself
easybuild_venv() {
    if [ -x "$VENV/bin/eb" ] && EB_PYTHON=$VENV/bin/python "$VENV/bin/eb" --version 2>/dev/null | grep -q "EasyBuild $EB_VERSION"; then
        say "   EasyBuild $EB_VERSION already in $VENV"
    else
        rm -rf "$VENV"
        /usr/bin/python3 -m venv "$VENV"
        # easybuild-easyconfigs is not needed: the site writes its own easyconfigs
        "$VENV/bin/pip" install -q "easybuild-framework==$EB_VERSION" "easybuild-easyblocks==$EB_VERSION" 2>&1 \
            | grep -v -e "legacy 'setup.py install'" -e "^ *DEPRECATION" -e "is ignored: it is neither" || true
        EB_PYTHON=$VENV/bin/python "$VENV/bin/eb" --version | grep -q "EasyBuild $EB_VERSION" \
            || die "EasyBuild $EB_VERSION did not install into $VENV"
    fi
    # The UserEnv easyblock imports envmod's library (package 'bridge'), so the Python that runs
    # EasyBuild gets envmod installed, re-installed whenever the library's sources change.
    local stamp
    stamp=$(cd "$REPO" && find src templates pyproject.toml -type f ! -name '*.pyc' -print0 | sort -z \
            | xargs -0 sha256sum | sha256sum | cut -c1-16)
    if [ "$(cat "$VENV/.envmod-stamp" 2>/dev/null)" = "$stamp" ] \
            && "$VENV/bin/python" -c 'import bridge.session' 2>/dev/null; then
        say "   envmod library up to date in $VENV"
    else
        "$VENV/bin/pip" install -q --upgrade --force-reinstall --no-deps "$REPO" 2>&1 | grep -v "is ignored: it is neither" || true
        "$VENV/bin/pip" install -q "$REPO" 2>&1 | grep -v "is ignored: it is neither" || true
        "$VENV/bin/python" -c 'import bridge.session' || die "envmod did not install into $VENV"
        echo "$stamp" >"$VENV/.envmod-stamp"
        say "   envmod library installed into $VENV"
    fi
}

# ---------------------------------------------------------------- configuration
site_config() {
    mkdir -p "$SITE/software" "$SITE/modules/all" "$SITE/sources" "$SITE/easyconfigs" "$SITE/easyblocks/u"
    write_if_changed "$CFG" <<EOF
# EasyBuild configuration of the envmod EasyBuild site: written by ci/eb-site.sh.
# A user builds on top of this site with the same file and a prefix of their own:
#   EASYBUILD_PREFIX=\$HOME/easybuild eb MyEnv-1.0.eb
[config]
prefix = $SITE
modules-tool = Lmod
module-syntax = Lua
robot-paths = $SITE/easyconfigs:%(DEFAULT_ROBOT_PATHS)s
include-easyblocks = $SITE/easyblocks/*/*.py
EOF
    # The site's copy of the easyblock; `--include-easyblocks=...` on the command line overrides it.
    write_if_changed "$SITE/easyblocks/u/userenv.py" <"$REPO/easyblocks/u/userenv.py"

    write_if_changed "$SITE/bin/eb" 755 <<EOF
#!/usr/bin/env bash
# EasyBuild $EB_VERSION with the envmod EasyBuild site's configuration ($CFG).
# Written by ci/eb-site.sh. The site's modules are put on MODULEPATH so that easyconfigs built
# under another prefix (a user's own) find their dependencies here.
export EB_PYTHON=$VENV/bin/python
export EASYBUILD_CONFIGFILES=\${EASYBUILD_CONFIGFILES:-$CFG}
if [ -z "\${LMOD_CMD:-}" ]; then
    source /usr/share/lmod/lmod/init/bash
fi
case ":\${MODULEPATH:-}:" in
    *":$SITE/modules/all:"*) ;;
    *) export MODULEPATH=\${MODULEPATH:+\$MODULEPATH:}$SITE/modules/all ;;
esac
exec $VENV/bin/eb "\$@"
EOF

    write_if_changed "$SITE/etc/profile.sh" <<EOF
# Source this (bash) to use the envmod EasyBuild site: Lmod, its modules, its eb.
# Written by ci/eb-site.sh.
if [ -z "\${LMOD_CMD:-}" ]; then
    source /usr/share/lmod/lmod/init/bash
fi
module use $SITE/modules/all
case ":\$PATH:" in *":$SITE/bin:"*) ;; *) export PATH=$SITE/bin:\$PATH ;; esac
EOF
}

# ---------------------------------------------------------------- the stack's easyconfigs
site_easyconfigs() {
    write_if_changed "$SITE/easyconfigs/o/OpenMPI/OpenMPI-$OPENMPI_VERSION.eb" <<EOF
# Debian's Open MPI $OPENMPI_VERSION (openmpi-bin, libopenmpi-dev) as a module: nothing is built.
# Written by ci/eb-site.sh.
easyblock = 'SystemMPI'

name = 'OpenMPI'
version = '$OPENMPI_VERSION'

homepage = 'https://www.open-mpi.org/'
description = "Open MPI $OPENMPI_VERSION as Debian 12 provides it (mpicc, mpirun, libmpi in /usr)."

toolchain = SYSTEM

# without it the module gets stray /usr prepends and I_MPI_ROOT
generate_standalone_module = True

moduleclass = 'mpi'
EOF

    write_if_changed "$SITE/easyconfigs/h/HDF5/HDF5-$HDF5_VERSION.eb" <<EOF
# Debian's parallel HDF5 $HDF5_VERSION (libhdf5-openmpi-dev) as a module: its files are linked
# into the install dir one by one (a search path that is itself a symlink out of the install dir
# makes the module fail to load). Written by ci/eb-site.sh.
easyblock = 'Bundle'

name = 'HDF5'
version = '$HDF5_VERSION'

homepage = 'https://www.hdfgroup.org/solutions/hdf5/'
description = "HDF5 $HDF5_VERSION with parallel I/O over OpenMPI, as Debian 12 builds it."

toolchain = SYSTEM

dependencies = [('OpenMPI', '$OPENMPI_VERSION')]

_deb = '$DEB_HDF5'
postinstallcmds = [
    'mkdir -p %(installdir)s/bin %(installdir)s/include %(installdir)s/lib',
    # the linker names (libhdf5.so, ...) and, so the loader finds them here too, the sonames
    'for f in %s/lib*.so %s/lib*.a %s/libhdf5.settings; do ln -sfn "\$(readlink -f \$f)" %%(installdir)s/lib/\$(basename \$f); done' % (_deb, _deb, _deb),
    'for f in /usr/lib/x86_64-linux-gnu/libhdf5_openmpi*.so.*; do ln -sfn "\$f" %(installdir)s/lib/; done',
    'for f in %s/include/*; do ln -sfn "\$(readlink -f \$f)" %%(installdir)s/include/; done' % _deb,
    'for t in h5pcc h5pfc; do ln -sfn /usr/bin/\$t.openmpi %(installdir)s/bin/\$t; done',
]

modextravars = {
    'HDF5_DIR': '%(installdir)s',
    'HDF5_MPI': 'ON',
}

sanity_check_paths = {
    'files': ['bin/h5pcc', 'include/H5pubconf.h', 'include/hdf5.h', 'lib/libhdf5.so', 'lib/libhdf5_hl.so'],
    'dirs': [],
}
sanity_check_commands = ["grep -q 'define H5_HAVE_PARALLEL 1' %(installdir)s/include/H5pubconf.h"]

moduleclass = 'data'
EOF

    write_if_changed "$SITE/easyconfigs/p/Python/Python-$PY_VERSION.eb" <<EOF
# CPython $PY_VERSION built by EasyBuild from Debian's orig tarball (ci/eb-site.sh puts it in the
# source path; there are no source URLs, nothing is downloaded). Written by ci/eb-site.sh.
name = 'Python'
version = '$PY_VERSION'

homepage = 'https://www.python.org/'
description = "Python $PY_VERSION, the central interpreter that users' environments are built over."

toolchain = SYSTEM

sources = [SOURCE_TGZ]
checksums = ['$PY_SHA256']

# keep the build to a few minutes on 2 cores
optimized = False
use_lto = False
install_pip = True
exts_list = []

moduleclass = 'lang'
EOF
}

# ---------------------------------------------------------------- the Python source
python_source() {
    local dest=$SITE/sources/p/Python/Python-$PY_VERSION.tgz cand tmp
    if [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$PY_SHA256" ]; then
        say "   have $dest"
        return
    fi
    mkdir -p "$(dirname "$dest")"
    # the plain site's copy (ci/site.sh), if it has one
    for cand in "$PLAIN_SITE"/sources/python3.11_$PY_VERSION.orig.tar.gz "$PLAIN_SITE"/sources/Python-$PY_VERSION.tgz; do
        if [ -f "$cand" ] && [ "$(sha256sum "$cand" | cut -d' ' -f1)" = "$PY_SHA256" ]; then
            cp "$cand" "$dest.tmp" && mv "$dest.tmp" "$dest"
            say "   reused $cand"
            return
        fi
    done
    # else Debian's source package: needs a deb-src entry for bookworm
    if ! grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        $SUDO tee /etc/apt/sources.list.d/envmod-eb-bookworm-src.sources >/dev/null <<EOF
# Added by envmod's ci/eb-site.sh: source packages (the CPython tarball of the EasyBuild site)
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        $SUDO apt-get update -qq
    fi
    tmp=$(mktemp -d)
    # apt exits non-zero when a newer .dsc is missing although the tarball arrives: check the tarball
    (cd "$tmp" && apt-get source --download-only python3.11 >/dev/null 2>&1) || true
    cand=$tmp/python3.11_$PY_VERSION.orig.tar.gz
    [ -f "$cand" ] || { rm -rf "$tmp"; die "apt-get source python3.11 did not bring python3.11_$PY_VERSION.orig.tar.gz"; }
    [ "$(sha256sum "$cand" | cut -d' ' -f1)" = "$PY_SHA256" ] \
        || { rm -rf "$tmp"; die "python3.11_$PY_VERSION.orig.tar.gz has an unexpected sha256"; }
    mv "$cand" "$dest"
    rm -rf "$tmp"
    say "   downloaded Debian's python3.11_$PY_VERSION.orig.tar.gz"
}

# ---------------------------------------------------------------- building the stack
eb_site() {
    local -a env=(EB_PYTHON="$VENV/bin/python" EASYBUILD_CONFIGFILES="$CFG")
    [ "$(id -u)" = 0 ] && env+=(EASYBUILD_ALLOW_USE_AS_ROOT_AND_ACCEPT_CONSEQUENCES=1)
    [ -n "${EB_PARALLEL:-}" ] && env+=(EASYBUILD_PARALLEL="$EB_PARALLEL")
    env "${env[@]}" nice -n 10 "$SITE/bin/eb" "$@"
}

build_module() {
    local name=$1 version=$2 ec=$3
    if [ -f "$SITE/modules/all/$name/$version.lua" ] && [ -d "$SITE/software/$name/$version" ]; then
        say "   $name/$version already installed"
        return
    fi
    eb_site "$ec"
}

permissions() {
    # users read the whole stack (EasyBuild keeps the umask, but be sure)
    chmod -R a+rX "$SITE/software" "$SITE/modules" "$SITE/easybuild" "$SITE/bin" "$SITE/etc" "$SITE/easyblocks" "$SITE/easyconfigs"
}

test_user() {
    [ -n "$TEST_USER" ] || { say "   no test user (ENVMOD_EB_USER is empty)"; return; }
    if id "$TEST_USER" >/dev/null 2>&1; then
        say "   $TEST_USER exists"
    elif [ "$(id -u)" = 0 ]; then
        useradd --create-home --shell /bin/bash "$TEST_USER"
        say "   created user $TEST_USER"
    else
        say "   not root: the tests run eb as $(id -un)"
    fi
}

check_site() {
    # the site as a user sees it: the three modules load and do what envmod needs
    # shellcheck disable=SC1091
    bash --noprofile --norc -c "
        set -e
        source '$SITE/etc/profile.sh'
        module purge
        module load Python/$PY_VERSION OpenMPI/$OPENMPI_VERSION HDF5/$HDF5_VERSION
        python3 -c 'import ssl, ctypes, sqlite3, lzma, bz2, zlib, venv, ensurepip; import sys; assert sys.version.startswith(\"$PY_VERSION\")'
        command -v mpicc >/dev/null
        test \"\$HDF5_MPI\" = ON
        test -f \"\$HDF5_DIR/include/H5pubconf.h\"
        eb --version
    " || die "the site's modules do not work as expected"
}

run_step "system packages" system_packages
run_step "versions" detect_versions
run_step "EasyBuild $EB_VERSION" easybuild_venv
run_step "configuration" site_config
run_step "easyconfigs" site_easyconfigs
run_step "Python source" python_source
run_step "OpenMPI/$OPENMPI_VERSION" build_module OpenMPI "$OPENMPI_VERSION" "$SITE/easyconfigs/o/OpenMPI/OpenMPI-$OPENMPI_VERSION.eb"
run_step "HDF5/$HDF5_VERSION" build_module HDF5 "$HDF5_VERSION" "$SITE/easyconfigs/h/HDF5/HDF5-$HDF5_VERSION.eb"
run_step "Python/$PY_VERSION" build_module Python "$PY_VERSION" "$SITE/easyconfigs/p/Python/Python-$PY_VERSION.eb"
run_step "permissions" permissions
run_step "test user" test_user
run_step "check" check_site

say "done: $SITE (source $SITE/etc/profile.sh to use it)"
for i in "${!STEP_NAMES[@]}"; do
    printf 'eb-site:   %-22s %8ss\n' "${STEP_NAMES[$i]}" "${STEP_TIMES[$i]}"
done
