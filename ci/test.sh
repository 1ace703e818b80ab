#!/usr/bin/env bash
# Set up (ci/setup.sh) and run every test tier: unit, real modules (Lmod and Environment
# Modules), end to end (compiling mpi4py/h5py against the central site), plus the benches.
# Extra arguments go to pytest, e.g. `bash ci/test.sh -m "not slow"`.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$REPO/ci/setup.sh"
export ENVMOD_SITE=${ENVMOD_SITE:-/opt/envmod-site}
# A site that is missing here is a failure, not a skip.
export ENVMOD_REQUIRE_SITE=1
cd "$REPO"
"$REPO/.venv/bin/python" -m pytest -ra "$@"
