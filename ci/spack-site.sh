#!/usr/bin/env bash
# Set up a central Spack 1.1 site on a Debian 12 machine, the way an HPC centre would:
# Debian's gcc, python3, OpenMPI and parallel HDF5 registered as externals, and both Lmod
# (hierarchical) and Tcl modulefiles generated for them. envmod's tests layer on this site.
#
# Inputs (environment):
#   SPACK_ROOT           a Spack 1.1 checkout (required)
#   SPACK_PACKAGES_REPO  a spack-packages checkout matching it (required on first run);
#                        its repos/spack_repo/builtin is used as the recipe repository
#   ENVMOD_SPACK_SITE    where the site goes (default /opt/envmod-spack-site)
#   SPACK_PYTHON         a Python that can import clingo (default: python3)
#
# Re-running is cheap: config files are only rewritten when their content changes, the
# install step is skipped when the externals are already registered, and modules are only
# refreshed when the database or modules.yaml is newer than the module index.
#
# Needs: apt-get install build-essential gfortran openmpi-bin libopenmpi-dev \
#        libhdf5-openmpi-dev python3 patchelf
set -euo pipefail

die() { echo "spack-site: error: $*" >&2; exit 1; }
say() { echo "spack-site: $*"; }

[ -n "${SPACK_ROOT:-}" ] || die "SPACK_ROOT is not set; point it at a Spack 1.1 checkout (the directory holding bin/spack)"
[ -x "$SPACK_ROOT/bin/spack" ] || die "SPACK_ROOT=$SPACK_ROOT has no bin/spack; is it a Spack checkout?"

SITE=${ENVMOD_SPACK_SITE:-/opt/envmod-spack-site}
ETC=$SITE/etc/spack
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
# A non-root user gets the site directory made (with sudo) and handed over once.
if ! mkdir -p "$SITE" 2>/dev/null || [ ! -w "$SITE" ]; then
    $SUDO mkdir -p "$SITE" || die "cannot create $SITE"
    $SUDO chown "$(id -u):$(id -g)" "$SITE"
fi

# Spack 1.x ships no recipes; without a local copy it would try to git-clone them.
RECIPES=
if [ -n "${SPACK_PACKAGES_REPO:-}" ]; then
    RECIPES=$SPACK_PACKAGES_REPO/repos/spack_repo/builtin
    [ -f "$RECIPES/repo.yaml" ] || die "SPACK_PACKAGES_REPO=$SPACK_PACKAGES_REPO has no repos/spack_repo/builtin/repo.yaml; is it a spack-packages checkout?"
elif [ ! -f "$ETC/repos.yaml" ]; then
    die "SPACK_PACKAGES_REPO is not set; point it at a spack-packages checkout (tag v2025.11.0 goes with Spack 1.1.0)"
fi

# Spack does not bootstrap clingo here (no network), so the Python must already have it.
export SPACK_PYTHON=${SPACK_PYTHON:-$(command -v python3 || true)}
[ -n "$SPACK_PYTHON" ] || die "no python3 found; set SPACK_PYTHON"
"$SPACK_PYTHON" -c 'import clingo' 2>/dev/null \
    || die "SPACK_PYTHON=$SPACK_PYTHON cannot import clingo; make a venv with 'pip install clingo==5.8.3 pyyaml jinja2 packaging' and set SPACK_PYTHON to its python"

# Every config scope and cache lives in the site, so nothing leaks into (or out of) $HOME.
export SPACK_SYSTEM_CONFIG_PATH=$ETC
export SPACK_USER_CONFIG_PATH=$SITE/user
export SPACK_USER_CACHE_PATH=$SITE/cache
SPACK=$SPACK_ROOT/bin/spack

# ---------------------------------------------------------------- timing
STEP_NAMES=()
STEP_TIMES=()
now() { date +%s.%N; }
# run_step NAME CMD...: run CMD and remember how long it took
run_step() {
    local name=$1 t0 t1 dt
    shift
    say "== $name"
    t0=$(now)
    "$@"
    t1=$(now)
    dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    STEP_NAMES+=("$name")
    STEP_TIMES+=("$dt")
    say "   $name: ${dt}s"
}

# write_if_changed PATH: write stdin to PATH unless PATH already holds exactly that
write_if_changed() {
    local dest=$1 tmp
    tmp=$(mktemp "$dest.XXXXXX")
    cat >"$tmp"
    if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
        say "   unchanged: $dest"
    else
        chmod 644 "$tmp"
        mv -f "$tmp" "$dest"
        say "   wrote: $dest"
    fi
}

# ---------------------------------------------------------------- what Debian provides
# Versions are read from the system rather than assumed, so the externals never claim
# something that is not installed.
detect_externals() {
    command -v gcc >/dev/null || die "gcc not found (apt-get install build-essential)"
    GCC_VERSION=$(gcc -dumpfullversion)
    [ -x /usr/bin/python3 ] || die "/usr/bin/python3 not found"
    PYTHON_VERSION=$(/usr/bin/python3 -c 'import platform; print(platform.python_version())')
    command -v ompi_info >/dev/null || die "ompi_info not found (apt-get install openmpi-bin libopenmpi-dev)"
    OPENMPI_VERSION=$(ompi_info --version 2>/dev/null | sed -n 's/^Open MPI v\([0-9.]*\).*/\1/p')
    [ -n "$OPENMPI_VERSION" ] || die "could not read the OpenMPI version from ompi_info"
    local settings=/usr/lib/x86_64-linux-gnu/hdf5/openmpi/libhdf5.settings
    [ -f "$settings" ] || die "$settings not found (apt-get install libhdf5-openmpi-dev)"
    HDF5_VERSION=$(sed -n 's/^[[:space:]]*HDF5 Version:[[:space:]]*\([0-9.]*\).*/\1/p' "$settings")
    [ -n "$HDF5_VERSION" ] || die "could not read the HDF5 version from $settings"
    local fc=
    command -v gfortran >/dev/null && fc=/usr/bin/gfortran
    GCC_LANGUAGES="c,c++${fc:+,fortran}"
    GCC_FORTRAN_LINE=${fc:+"          fortran: $fc"}
    say "   gcc $GCC_VERSION, python $PYTHON_VERSION, openmpi $OPENMPI_VERSION, hdf5 $HDF5_VERSION"
}

# ---------------------------------------------------------------- config scopes
write_config() {
    mkdir -p "$ETC" "$SITE/user" "$SITE/cache" "$SITE/opt" "$SITE/modules/lmod" "$SITE/modules/tcl"

    write_if_changed "$ETC/config.yaml" <<EOF
# envmod central site: written by ci/spack-site.sh
config:
  install_tree:
    root: $SITE/opt
  # the default source cache is inside SPACK_ROOT; keep the checkout pristine
  source_cache: $SITE/cache/source
EOF

    if [ -n "$RECIPES" ]; then
        write_if_changed "$ETC/repos.yaml" <<EOF
# envmod central site: written by ci/spack-site.sh
# '::' replaces Spack's default, which would git-clone the recipes from the network
repos::
  builtin: $RECIPES
EOF
    fi

    write_if_changed "$ETC/mirrors.yaml" <<EOF
# envmod central site: written by ci/spack-site.sh
# no network here: drop Spack's public source mirror
mirrors:: {}
EOF

    # hdf5's variants follow Debian's libhdf5.settings for the openmpi flavour
    # (C++, Fortran, high-level library, szip, API default v18, not thread-safe);
    # '%mpi=openmpi' records the hdf5 -> openmpi edge in the database.
    write_if_changed "$ETC/packages.yaml" <<EOF
# envmod central site: written by ci/spack-site.sh
# Debian's packages, registered as externals (Spack never builds these)
packages:
  gcc:
    buildable: false
    externals:
      - spec: gcc@$GCC_VERSION languages='$GCC_LANGUAGES'
        prefix: /usr
        extra_attributes:
          compilers:
            c: /usr/bin/gcc
            cxx: /usr/bin/g++
$GCC_FORTRAN_LINE
  python:
    buildable: false
    externals:
      - spec: python@$PYTHON_VERSION
        prefix: /usr
  openmpi:
    buildable: false
    externals:
      - spec: openmpi@$OPENMPI_VERSION
        prefix: /usr
  hdf5:
    buildable: false
    externals:
      - spec: hdf5@$HDF5_VERSION+mpi+cxx+fortran+hl+shared+szip~threadsafe~java api=v18 %mpi=openmpi
        prefix: /usr
EOF

    write_if_changed "$ETC/modules.yaml" <<EOF
# envmod central site: written by ci/spack-site.sh
modules:
  default:
    enable:
      - lmod
      - tcl
    roots:
      lmod: $SITE/modules/lmod
      tcl: $SITE/modules/tcl
    lmod:
      # named explicitly: otherwise Spack guesses them and writes the guess into a config scope
      core_compilers:
        - gcc@$GCC_VERSION
      hierarchy:
        - mpi
EOF
}

# ---------------------------------------------------------------- bootstrapping
disable_bootstrap() {
    local name
    for name in github-actions-v2 github-actions-v0.6 spack-install; do
        # 'spack bootstrap disable NAME' records 'trusted: {NAME: false}' in the scope
        if [ -f "$ETC/bootstrap.yaml" ] && grep -Eq "^[[:space:]]+$name: false" "$ETC/bootstrap.yaml"; then
            say "   already disabled: $name"
        else
            "$SPACK" bootstrap disable --scope system "$name"
        fi
    done
}

# ---------------------------------------------------------------- install
SPECS=(python openmpi hdf5)

installed_already() {
    local spec db=$SITE/opt/.spack-db/index.json
    # a packages.yaml newer than the database may declare externals not registered yet
    [ -f "$db" ] && [ "$db" -nt "$ETC/packages.yaml" ] || return 1
    for spec in "python@$PYTHON_VERSION" "openmpi@$OPENMPI_VERSION" "hdf5@$HDF5_VERSION+mpi"; do
        "$SPACK" find "$spec" >/dev/null 2>&1 || return 1
    done
}

install_specs() {
    if installed_already; then
        say "   already registered: ${SPECS[*]}"
    else
        "$SPACK" install "${SPECS[@]}"
    fi
}

# ---------------------------------------------------------------- modules
# refresh_modules TYPE: regenerate that module type unless its index is newer than both
# the database and modules.yaml ('refresh' is what writes module-index.yaml)
refresh_modules() {
    local kind=$1 index=$SITE/modules/$1/module-index.yaml db=$SITE/opt/.spack-db/index.json
    if [ -f "$index" ] && [ "$index" -nt "$db" ] && [ "$index" -nt "$ETC/modules.yaml" ]; then
        say "   up to date: $index"
    else
        "$SPACK" module "$kind" refresh -y
    fi
}

# ---------------------------------------------------------------- run
say "Spack:  $SPACK_ROOT ($("$SPACK" --version 2>/dev/null || echo '?'))"
say "site:   $SITE"
run_step "detect Debian packages" detect_externals
run_step "write config scopes" write_config
run_step "disable network bootstrapping" disable_bootstrap
run_step "spack install ${SPECS[*]}" install_specs
run_step "spack module lmod refresh" refresh_modules lmod
run_step "spack module tcl refresh" refresh_modules tcl

echo
say "site layout:"
find "$SITE" -maxdepth 2 -not -path "$SITE/cache/*" | sort | sed "s|^|    |"
echo
say "installed specs:"
"$SPACK" find -l --no-groups -v | sed "s|^|    |" || true
echo
say "modulefiles:"
find "$SITE/modules" -type f \( -name '*.lua' -o -path '*/tcl/*' \) -not -name module-index.yaml | sort | sed "s|^|    |"
echo
say "step timings:"
for i in "${!STEP_NAMES[@]}"; do
    printf 'spack-site:    %-32s %8ss\n' "${STEP_NAMES[$i]}" "${STEP_TIMES[$i]}"
done
echo
core=$(find "$SITE/modules/lmod" -mindepth 2 -maxdepth 2 -type d -name Core | head -n 1)
[ -n "$core" ] || die "no Lmod Core directory under $SITE/modules/lmod"
tcl_root=$(find "$SITE/modules/tcl" -mindepth 1 -maxdepth 1 -type d | head -n 1)
say "Lmod Core root: $core"
say "Tcl root:       $tcl_root"
say "use with:  export MODULEPATH=$core   (Lmod)"
