"""Every rank writes its number into one HDF5 file in parallel (driver="mpio"); rank 0 reads it back."""

import sys

import h5py
import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
path = sys.argv[1] if len(sys.argv) > 1 else "demo.h5"
with h5py.File(path, "w", driver="mpio", comm=comm) as f:
    ranks = f.create_dataset("ranks", (comm.size,), dtype="i4")
    ranks[comm.rank] = comm.rank * 10
comm.Barrier()
if comm.rank == 0:
    with h5py.File(path, "r") as f:
        values = f["ranks"][()]
    assert list(values) == [r * 10 for r in range(comm.size)], values
    print(f"{comm.size} ranks wrote {path} in parallel with {MPI.Get_library_version().splitlines()[0]}; "
          f"read back {values.tolist()}; h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}, "
          f"mpi={h5py.get_config().mpi}), numpy {np.__version__}")
