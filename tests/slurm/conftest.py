"""The Slurm tier: a real single-node Slurm 22.05 started by ci/slurm.sh (slurmctld, slurmd,
munge). Tests skip with a reason when it is not up, unless ENVMOD_REQUIRE_SLURM=1 (ci/test.sh sets
it when ci/slurm.sh succeeded): CI must not pass by skipping."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pytest


def slurm_conf() -> Path:
    if os.environ.get("SLURM_CONF"):
        return Path(os.environ["SLURM_CONF"])
    return Path(os.environ.get("ENVMOD_SLURM_DIR", "/tmp/envmod-slurm")) / "etc/slurm.conf"


@dataclass
class JobResult:
    id: str
    state: str            # COMPLETED, FAILED, CANCELLED, ...
    exit_code: str        # "0:0"
    output: str

    def check(self) -> "JobResult":
        assert self.state == "COMPLETED", f"job {self.id}: {self.state} {self.exit_code}\n{self.output}"
        return self


@dataclass
class Slurm:
    conf: Path

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf)
        env.update(extra or {})
        return env

    def submit(self, script: str, workdir: Path, sbatch_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
               as_user: str | None = None) -> str:
        """Submit ``script`` (its output: workdir/job-<id>.out); the job's id."""
        path = workdir / f"job-{time.monotonic_ns()}.sh"
        path.write_text("#!/bin/bash\n" + script)
        path.chmod(0o755)
        argv = ["sbatch", "--parsable", "-D", str(workdir), "-o", str(workdir / "job-%j.out"), *sbatch_args, str(path)]
        if as_user:
            argv = ["runuser", "-u", as_user, "--", "env", f"SLURM_CONF={self.conf}", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.environ(env), timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().split(";")[0]

    def wait(self, job: str, workdir: Path, timeout: float = 900) -> JobResult:
        """Poll squeue until ``job`` has left it (faster than sbatch --wait), then its state."""
        deadline = time.monotonic() + timeout
        while self.running(job):
            assert time.monotonic() < deadline, f"job {job} still running after {timeout}s"
            time.sleep(0.3)
        show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True,
                              env=self.environ(), timeout=60).stdout
        state = re.search(r"JobState=(\S+)", show)
        code = re.search(r"ExitCode=(\S+)", show)
        output = workdir / f"job-{job}.out"
        return JobResult(job, state.group(1) if state else "?", code.group(1) if code else "?",
                         output.read_text() if output.exists() else "")

    def run(self, script: str, workdir: Path, sbatch_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
            as_user: str | None = None, timeout: float = 900) -> JobResult:
        return self.wait(self.submit(script, workdir, sbatch_args, env, as_user), workdir, timeout)

    def running(self, job: str) -> bool:
        proc = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True,
                              env=self.environ(), timeout=60)
        return proc.returncode == 0 and bool(proc.stdout.strip())


def _not_up_reason(conf: Path) -> str | None:
    for tool in ("sbatch", "srun", "sbcast", "squeue", "scontrol"):
        if not shutil.which(tool):
            return f"{tool} not found: run 'bash ci/slurm.sh' (Debian's slurm-client)"
    if not conf.is_file():
        return f"Slurm is not set up ({conf} missing): run 'bash ci/slurm.sh'"
    env = {**os.environ, "SLURM_CONF": str(conf)}
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env, timeout=60)
    states = set(proc.stdout.split())
    if proc.returncode != 0 or not states & {"idle", "mix", "alloc"}:
        return f"Slurm is not up (sinfo: {(proc.stderr or proc.stdout).strip() or 'no node'}): run 'bash ci/slurm.sh'"
    return None


@pytest.fixture(scope="session")
def slurm() -> Slurm:
    conf = slurm_conf()
    reason = _not_up_reason(conf)
    if reason:
        if os.environ.get("ENVMOD_REQUIRE_SLURM") == "1":
            pytest.fail(reason + " (ENVMOD_REQUIRE_SLURM=1: CI must not pass by skipping)")
        pytest.skip(reason)
    return Slurm(conf)
