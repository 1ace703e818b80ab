"""``envmod stage`` / ``unstage`` in a Slurm batch script: the image goes to every node of the job
with ``sbcast`` (Slurm's own tree broadcast: one read of the image from the shared file system,
whatever the number of nodes), then one step with a task per node mounts or unpacks it there
(``node.py``). What a job staged is remembered in ``<root>/.envmod/staged/<job>-<name>.json``
(one small file per job) so that ``unstage`` releases exactly that, even after a re-pack.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import StageError, UsageError
from ..fsutil import atomic_write_text
from .image import SUFFIXES, Manifest, images_dir


@dataclass
class Job:
    """The Slurm allocation the batch script runs in."""

    id: str
    nodes: int

    @classmethod
    def current(cls, environ: Mapping[str, str], command: str) -> "Job":
        job = environ.get("SLURM_JOB_ID")
        if not job:
            raise UsageError(f"'envmod {command}' runs inside a Slurm job (no SLURM_JOB_ID here)",
                             hint="call it in a batch script (sbatch) or under salloc")
        nodes = environ.get("SLURM_JOB_NUM_NODES") or environ.get("SLURM_NNODES") or "1"
        return cls(job, int(nodes))


def _per_node_step(job: Job, args: list[str]) -> list[str]:
    """Run ``python -m bridge.stage.node ARGS`` once on every node of the job (a step that may
    overlap the job's others); each node's line of output."""
    command = ["srun", "--overlap", f"--nodes={job.nodes}", f"--ntasks={job.nodes}", "--ntasks-per-node=1",
               "--mpi=none", "--kill-on-bad-exit=1", sys.executable, "-m", "bridge.stage.node", *args]
    proc = subprocess.run(command, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL,
                          timeout=3600)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise StageError(f"the per-node step ({args[0]}) failed: {last}")
    return sorted(proc.stdout.split("\n")[:-1] if proc.stdout.endswith("\n") else proc.stdout.splitlines())


def _record_path(root: Path, job: Job, name: str) -> Path:
    return root / ".envmod" / "staged" / f"{job.id}-{name}.json"


def stage_image(root: Path, manifest: Manifest, job: Job, allow_fuse: bool = True) -> list[str]:
    """Put the packed image ``manifest`` names on every node of ``job`` at its staged path."""
    staged = Path(manifest.staged_prefix)
    # an unguessable name in the base (often /tmp): no one can put a file or link there first
    incoming = Path(manifest.stage_base) / (f".envmod-incoming-{manifest.user}-{staged.name}-{job.id}-"
                                            f"{secrets.token_hex(8)}{SUFFIXES[manifest.format]}")
    proc = subprocess.run(["sbcast", "--force", str(images_dir(root) / manifest.image), str(incoming)],
                          capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL, timeout=3600)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise StageError(f"sbcast of {manifest.image} to the job's nodes failed: {last}")
    record = _record_path(root, job, manifest.name)
    record.parent.mkdir(parents=True, exist_ok=True)
    # written before the nodes attach, so an unstage after a half-done stage still releases them
    atomic_write_text(record, json.dumps({"staged_prefix": manifest.staged_prefix}) + "\n")
    args = ["attach", str(incoming), manifest.format, str(staged), job.id] + ([] if allow_fuse else ["--no-fuse"])
    return _per_node_step(job, args)


def unstage(root: Path, name: str, job: Job) -> list[str]:
    """Release on every node what this job staged of ``name`` (the batch script's EXIT trap)."""
    record = _record_path(root, job, name)
    try:
        staged = json.loads(record.read_text())["staged_prefix"]
    except FileNotFoundError:
        raise UsageError(f"job {job.id} has not staged {name!r}") from None
    lines = _per_node_step(job, ["detach", staged, job.id])
    record.unlink(missing_ok=True)
    return lines


def sweep_command(base: str | None = None) -> list[str]:
    """The command a site's Slurm Epilog runs on each node (see README)."""
    return [sys.executable, "-m", "bridge.stage.node", "sweep", base or os.environ.get("ENVMOD_STAGE_BASE", "/tmp")]
