# shellcheck shell=bash
# Source me (bash): switch the current shell to one of the two real module systems of the test
# site that ci/site.sh builds, the way a user's login would on an HPC machine.
#
#   source ci/modules.sh
#   use_lmod           # Lmod 8.6 (Debian's lmod), MODULEPATH=$ENVMOD_SITE/modules/lua
#   use_envmodules     # Environment Modules 5.2 (unpacked in the site), MODULEPATH=$ENVMOD_SITE/modules/tcl
#   module load python/3.11 openmpi/4.1.4 hdf5/1.10.8
#
# Works in a fresh non-login `bash -c` and under `set -euo pipefail`. Call one use_* before
# loading anything; switching later purges what the previous tool had loaded.
# ENVMOD_SITE defaults to /opt/envmod-site (ci/site.sh's default).

export ENVMOD_SITE="${ENVMOD_SITE:-/opt/envmod-site}"

# Open MPI refuses to start as root unless told twice that this is intended (CI and these
# containers run as root). Only then: for a normal user the variables would be noise.
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# mpirun hands out one slot per core that hwloc counts; the tests run `mpirun -n 2`, which a
# machine with fewer counted cores (hyperthreads are not counted) would refuse without this.
export OMPI_MCA_rmaps_base_oversubscribe=1

# Forget every trace of either module tool in this shell: loaded-module bookkeeping, the tools'
# own variables, and their shell functions. PATH and friends are left alone (purge first).
_envmod_forget_module_tools() {
    if [ -n "${LOADEDMODULES:-}" ] && declare -F module >/dev/null; then
        module purge >/dev/null 2>&1 || true
    fi
    local v
    for v in $(compgen -v); do
        case $v in
            LMOD_*|__LMOD_*|_ModuleTable*_|MODULES_*|__MODULES_*|MODULESHOME|MODULEPATH|MODULEPATH_ROOT) unset "$v" ;;
        esac
    done
    unset LOADEDMODULES _LMFILES_
    # A login shell with Debian's lmod has BASH_ENV pointing at Lmod's init, which would
    # redefine `module` as Lmod's in every child bash.
    case ${BASH_ENV:-} in */lmod/*) unset BASH_ENV ;; esac
    # Lmod exports `module` and `ml` (export -f), so they would also reach child shells.
    unset -f module ml _module_raw clearMT clearLmod xSetTitleLmod settarg 2>/dev/null || true
}

use_lmod() {
    _envmod_forget_module_tools
    local init=/usr/share/lmod/lmod/init/bash
    [ -r "$init" ] || { echo "use_lmod: $init not found (apt-get install lmod)" >&2; return 1; }
    # Lmod's init is not written for `set -u` (it tests variables that may be unset).
    local had_u=0
    case $- in *u*) had_u=1; set +u ;; esac
    # shellcheck disable=SC1090
    . "$init"
    [ "$had_u" = 1 ] && set -u
    export MODULEPATH="$ENVMOD_SITE/modules/lua"
}

use_envmodules() {
    _envmod_forget_module_tools
    local root="$ENVMOD_SITE/envmodules"
    local cmd
    cmd=$(echo "$root"/usr/lib/*/modulecmd.tcl)
    [ -f "$cmd" ] || { echo "use_envmodules: no modulecmd.tcl under $root (run ci/site.sh)" >&2; return 1; }
    command -v tclsh >/dev/null || { echo "use_envmodules: tclsh not found (apt-get install tcl)" >&2; return 1; }
    # What Environment Modules' own init/bash does, minus its baked-in /usr/... path: run
    # `modulecmd.tcl bash autoinit`, which prints the real `module`/`_module_raw`/`ml` functions
    # (eval "$(tclsh $MODULES_CMD bash "$@")", exported to child shells) and sets
    # MODULES_CMD to this modulecmd.tcl. A failing module command ends its output with a false
    # test, so `module load nosuch` returns non-zero. Then the two paths autoinit cannot know.
    eval "$(tclsh "$cmd" bash autoinit)" || { echo "use_envmodules: $cmd bash autoinit failed" >&2; return 1; }
    export MODULESHOME="$root/usr/share/modules"
    export MODULEPATH="$ENVMOD_SITE/modules/tcl"
}
