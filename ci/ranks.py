"""Print one line from rank 0 naming every rank that ran and the MPI library they used.

Ranks gather to rank 0 before printing because two ranks writing to one pipe interleave
their lines (seen in CI: "RANKRANK 1 OF 2\n 0 OF 2").
"""
from mpi4py import MPI

comm = MPI.COMM_WORLD
seen = comm.gather((comm.rank, MPI.Get_library_version().split()[0]), root=0)
if comm.rank == 0:
    ranks = [rank for rank, _ in seen]
    libraries = sorted({library for _, library in seen})
    print(f"ranks {ranks} of {comm.size} library {' '.join(libraries)}", flush=True)
