#!/usr/bin/env bash
# The main job end to end on the built-in central site: a user loads the site's Python, MPI and
# HDF5 modules, creates an env with mpi4py and h5py compiled against them, purges, loads the
# env's module alone, and runs a 2-rank parallel HDF5 write. Uses Lmod (the site's default);
# ENVMOD_DEMO_MODULES=envmodules runs it with Environment Modules instead.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$REPO/ci/setup.sh"
export ENVMOD_SITE=${ENVMOD_SITE:-/opt/envmod-site}
export ENVMOD_ROOT=${ENVMOD_ROOT:-$HOME/.local/share/envmod-demo}
export PATH="$REPO/.venv/bin:$PATH"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

bash --noprofile --norc -euo pipefail <<SCRIPT
source "$REPO/ci/modules.sh"
use_${ENVMOD_DEMO_MODULES:-lmod}
step() { echo "\$ \$*"; "\$@"; }
step module load python/3.11 openmpi/4.1.4 hdf5/1.10.8
step envmod create myenv --with mpi4py h5py --description "demo: mpi4py + parallel h5py" --force
step module purge
step module use "\$(envmod root)/modules"
step module load myenv/py3.11
step module list
step mpirun -n 2 python "$REPO/ci/demo.py" "$WORK/demo.h5" </dev/null   # mpirun reads stdin: keep it off this script
step envmod show myenv
SCRIPT
