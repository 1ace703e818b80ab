#!/usr/bin/env bash
# Set up every central site and run every test tier: unit, real modules (Lmod and Environment
# Modules), end to end (compiling mpi4py/h5py against the central site), the UserEnv easyblock under
# a real EasyBuild, and `spack envmod` under a real Spack 1.1.0.
#   ci/setup.sh     the plain central site and envmod's own .venv
#   ci/eb-site.sh   the central EasyBuild site
#   ci/spack.sh     Spack 1.1.0 from ../shared/vendor (or your SPACK_ROOT) and the central Spack site
#   ci/conda-site.sh  conda 26.7.1 from ../shared/vendor as the site's central conda (exit 3: the conda tier skips)
#   ci/slurm.sh     a real single-node Slurm 22.05 for 'envmod stage' (exit 3: the slurm tier skips)
# The tests run on every core (pytest-xdist, one test file per worker at a time, so a file's shared
# env is built once). At the end: a table of how long each step and tier took, and the 20 slowest
# tests. The benches are run by hand: bench/*.
# Extra arguments go to pytest, e.g. `bash ci/test.sh -m "not slow"`.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ENVMOD_SITE=${ENVMOD_SITE:-/opt/envmod-site}
export ENVMOD_EB_SITE=${ENVMOD_EB_SITE:-/opt/envmod-eb-site}
export ENVMOD_SPACK_SITE=${ENVMOD_SPACK_SITE:-/opt/envmod-spack-site}

STEPS=()
# step NAME CMD...: run CMD, remember its wall time for the table at the end
step() {
    local name=$1 t0 rc=0
    shift
    t0=$(date +%s)
    "$@" || rc=$?
    STEPS+=("$(printf '%-34s %6.1f min' "$name" "$(awk -v s=$(($(date +%s) - t0)) 'BEGIN { print s / 60 }')")")
    return $rc
}
table() {
    echo
    echo "== ci/test.sh: time per step"
    printf '%s\n' "${STEPS[@]}"
}
# site_with_settings NAME SCRIPT REQUIRE_VAR DOING: a step whose script prints, as its last line,
# the settings its tier needs (VAR=value ..., exported here, with REQUIRE_VAR=1 so that the tier
# fails rather than skips); exit 3: it cannot run here and its tier skips.
site_with_settings() {
    local name=$1 script=$2 require=$3 doing=$4 rc=0 settings="${TMPDIR:-/tmp}/envmod-${2%.sh}-env.$$"
    step "$name" bash "$REPO/ci/$script" >"$settings" || rc=$?
    if [ $rc = 0 ]; then
        export $(tail -n 1 "$settings")
        export "$require=1"
    fi
    rm -f "$settings"
    if [ $rc != 0 ] && [ $rc != 3 ]; then
        echo "ci/test.sh: error: $doing failed (ci/$script exit $rc)" >&2
        exit 1
    fi
}
trap table EXIT

step "plain site + envmod (ci/setup.sh)" bash "$REPO/ci/setup.sh"
# after setup.sh: it reuses the plain site's CPython tarball
step "EasyBuild site (ci/eb-site.sh)" bash "$REPO/ci/eb-site.sh"
# A site that is missing here is a failure, not a skip.
export ENVMOD_REQUIRE_SITE=1 ENVMOD_REQUIRE_EASYBUILD=1

site_with_settings "Spack + its site (ci/spack.sh)" spack.sh ENVMOD_REQUIRE_SPACK "setting up Spack"

# after setup.sh: the conda site's channel has a python over the plain site's CPython
export ENVMOD_CONDA_SITE=${ENVMOD_CONDA_SITE:-/opt/envmod-conda-site}
conda_rc=0
step "conda site (ci/conda-site.sh)" bash "$REPO/ci/conda-site.sh" || conda_rc=$?
if [ $conda_rc = 0 ]; then
    export ENVMOD_REQUIRE_CONDA=1
elif [ $conda_rc != 3 ]; then
    echo "ci/test.sh: error: setting up the conda site failed (ci/conda-site.sh exit $conda_rc)" >&2
    exit 1
fi

# a real single-node Slurm for 'envmod stage' (tests/slurm); exit 3: it cannot run here, the tier skips
site_with_settings "Slurm (ci/slurm.sh)" slurm.sh ENVMOD_REQUIRE_SLURM "starting Slurm"    # SLURM_CONF=...

cd "$REPO"
# Lint before the tests: a finding fails CI (config in pyproject.toml: ruff's pyflakes, import order
# and complexity; mypy).
step "lint (ruff check src tests)" "$REPO/.venv/bin/ruff" check src tests
step "types (mypy)" "$REPO/.venv/bin/mypy"
step "tests (pytest -n $(nproc))" "$REPO/.venv/bin/python" -m pytest -ra -n "$(nproc)" --dist loadfile \
    --durations=20 "$@"
