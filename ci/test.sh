#!/usr/bin/env bash
# Set up (ci/setup.sh: the plain central site; ci/eb-site.sh: the central EasyBuild site) and run
# every test tier: unit, real modules (Lmod and Environment Modules), end to end (compiling
# mpi4py/h5py against the central site), and the UserEnv easyblock under a real EasyBuild.
# The Spack tier runs when a Spack is found (SPACK_ROOT or spack on PATH; see spack-ext/README.md)
# and skips with the reason otherwise. The benches are run by hand: bench/*.
# Extra arguments go to pytest, e.g. `bash ci/test.sh -m "not slow"`.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ENVMOD_SITE=${ENVMOD_SITE:-/opt/envmod-site}
bash "$REPO/ci/setup.sh"
# after setup.sh: it reuses the plain site's CPython tarball
export ENVMOD_EB_SITE=${ENVMOD_EB_SITE:-/opt/envmod-eb-site}
bash "$REPO/ci/eb-site.sh"
# A site that is missing here is a failure, not a skip.
export ENVMOD_REQUIRE_SITE=1 ENVMOD_REQUIRE_EASYBUILD=1
cd "$REPO"
"$REPO/.venv/bin/python" -m pytest -ra "$@"
