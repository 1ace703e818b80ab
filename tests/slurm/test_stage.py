"""``envmod stage`` in real Slurm jobs (issue #14): an env with mpi4py and h5py compiled against the
central OpenMPI/HDF5 is packed, staged node-local by a batch script, and a 2-rank parallel h5py
write under ``srun --mpi=pmix`` imports nothing from the shared env; a node where FUSE is not
usable unpacks instead; a stale image is refused; what a killed job left is swept."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, ModuleShell, envmod_command, require_site, site_dir, write_wheel
from tests.users import AsUser, base_python, copy_modules_sh, install_for_users

pytestmark = pytest.mark.slurm

PROBE = r'''
import json, os, sys
out, shared = sys.argv[1], os.path.realpath(sys.argv[2])
import numpy, mpi4py
from mpi4py import MPI
import h5py
comm = MPI.COMM_WORLD
with h5py.File(out, "w", driver="mpio", comm=comm) as f:
    d = f.create_dataset("ranks", (comm.size,), dtype="i")
    d[comm.rank] = comm.rank * 10
comm.Barrier()
with h5py.File(out, "r", driver="mpio", comm=comm) as f:
    written = [int(x) for x in f["ranks"][:]]
files = sorted({os.path.realpath(m.__file__) for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
with open("/proc/self/maps") as fh:
    mapped = sorted({line.split()[-1] for line in fh if "/" in line.split()[-1]})
# one file per rank: two ranks' long lines on one stdout would interleave
with open(f"{out}.rank{comm.rank}.json", "w") as fh:
    json.dump({"rank": comm.rank, "size": comm.size, "prefix": sys.prefix, "written": written,
      "mpi4py": mpi4py.__file__, "h5py": h5py.__file__, "files": files, "mapped": mapped,
      "shared": [p for p in files + mapped if p == shared or p.startswith(shared + "/")]}, fh)
print("PROBE", comm.rank)
'''


def job_preamble(root: Path, extra: str = "") -> str:
    return f"""set -e
source {shlex.quote(str(REPO / 'ci/modules.sh'))}
use_lmod
export ENVMOD_ROOT={shlex.quote(str(root))} ENVMOD_SITE={shlex.quote(str(site_dir()))}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
ENVMOD={envmod_command()}
{extra}"""


def probes(out: Path) -> list[dict]:
    """What each rank of PROBE wrote (writing ``out``)."""
    return sorted((json.loads(p.read_text()) for p in out.parent.glob(out.name + ".rank*.json")),
                  key=lambda p: p["rank"])


def pure_wheel(directory: Path, name: str = "stagepkg") -> Path:
    dist = f"{name}-1.0.dist-info"
    return write_wheel(directory / f"{name}-1.0-py3-none-any.whl", {
        f"{name}/__init__.py": b"VALUE = 1\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"})


def test_staged_job_imports_nothing_from_the_shared_env(slurm, compiled_env, tmp_path):
    root, base = tmp_path / "root", tmp_path / "node-local"
    root.mkdir()
    base.mkdir()
    shell = ModuleShell("lmod", root, tmp_path / "cache")
    shell.run("""
module load python/3.11 openmpi/4.1.4 hdf5/1.10.8
$ENVMOD create penv -q --with mpi4py h5py
$ENVMOD pack penv
""", timeout=1800, extra_env={"ENVMOD_WHEEL_CACHE": str(compiled_env.wheels), "ENVMOD_STAGE_BASE": str(base)}).check()
    manifest = json.loads((root / "images/penv.json").read_text())
    staged = manifest["staged_prefix"]
    (tmp_path / "probe.py").write_text(PROBE)
    result = slurm.run(job_preamble(root) + f"""
$ENVMOD stage penv
trap '$ENVMOD unstage penv' EXIT
module use "$ENVMOD_ROOT/modules"
module load penv/py3.11
echo "VIRTUAL_ENV=$VIRTUAL_ENV"
echo "MOUNT=$(findmnt -n -o FSTYPE {shlex.quote(staged)} || echo none)"
srun --mpi=pmix -n 2 python {tmp_path / 'probe.py'} {tmp_path / 'out.h5'} "$ENVMOD_ROOT/envs/penv"
""", tmp_path, ["-n", "2"]).check()
    out = result.output
    assert "staged penv (squashfs," in out and f"VIRTUAL_ENV={staged}" in out, out
    assert "vm: mounted" in out or ": mounted" in out, out
    assert "MOUNT=fuse.squashfuse" in out, out
    ranks = probes(tmp_path / "out.h5")
    assert [p["rank"] for p in ranks] == [0, 1] and all(p["size"] == 2 for p in ranks), out
    for p in ranks:
        assert p["written"] == [0, 10]
        assert p["prefix"] == staged
        assert p["mpi4py"].startswith(staged + "/") and p["h5py"].startswith(staged + "/")
        assert p["shared"] == [], f"rank {p['rank']} touched the shared env: {p['shared']}"
        # the env's compiled extensions were mapped from the node-local copy
        assert any(m.startswith(staged + "/") and "h5py" in m and m.endswith(".so") for m in p["mapped"])
    # the EXIT trap released it: nothing left on the node, the job's note under the root gone
    assert "vm: released" in out or ": released" in out, out
    assert not Path(staged).exists() and not any(Path(staged).parent.glob("*.sqfs"))
    assert not list((root / ".envmod/staged").iterdir())
    assert not list(base.glob(".envmod-incoming-*"))


@pytest.fixture
def small_env(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A root with a packed pure-Python env ``senv`` (no compile), its stage base, and a second
    wheel to change it with."""
    require_site()
    root, base = tmp_path / "root", tmp_path / "node-local"
    root.mkdir()
    base.mkdir()
    shell = ModuleShell("lmod", root, tmp_path / "cache")
    shell.run(f"""
module load python/3.11
$ENVMOD create senv -q --with {pure_wheel(tmp_path)}
$ENVMOD pack senv
""", extra_env={"ENVMOD_STAGE_BASE": str(base)}).check()
    return root, base, pure_wheel(tmp_path, "otherpkg")


def test_stale_image_is_refused_in_one_line_and_repacked_on_request(slurm, small_env, tmp_path):
    root, base, other = small_env
    subprocess.run([str(root / "envs/senv/bin/pip"), "install", "-q", "--no-index", str(other)], check=True)
    result = slurm.run(job_preamble(root) + f"""
rc=0; $ENVMOD stage senv 2>err.txt || rc=$?
echo "REFUSED rc=$rc lines=$(wc -l < err.txt) $(cat err.txt)"
ENVMOD_STAGE_BASE={shlex.quote(str(base))} $ENVMOD stage senv --repack --unpack
trap '$ENVMOD unstage senv' EXIT
module use "$ENVMOD_ROOT/modules"
module load senv/py3.11
python -c 'import otherpkg, sys; print("PREFIX", sys.prefix, otherpkg.__file__)'
""", tmp_path).check()
    out = result.output
    refused = next(line for line in out.splitlines() if line.startswith("REFUSED"))
    assert "rc=2 lines=1 envmod: error: the image of 'senv' is stale" in refused, out
    assert ": unpacked" in out, out
    staged = json.loads((root / "images/senv.json").read_text())["staged_prefix"]
    assert f"PREFIX {staged} {staged}/lib/python3.11/site-packages/otherpkg/__init__.py" in out, out
    assert not Path(staged).exists()


def test_a_killed_job_leaves_a_copy_that_the_epilog_sweep_releases(slurm, small_env, tmp_path):
    root, base, _ = small_env
    staged = Path(json.loads((root / "images/senv.json").read_text())["staged_prefix"])
    job = slurm.submit(job_preamble(root) + """
$ENVMOD stage senv
trap '$ENVMOD unstage senv' EXIT
echo STAGED
sleep 600
""", tmp_path)
    out = tmp_path / f"job-{job}.out"
    for _ in range(600):
        if out.exists() and "STAGED" in out.read_text():
            break
        assert slurm.running(job), out.read_text() if out.exists() else "no output"
        subprocess.run(["sleep", "0.2"])
    assert (staged / "envmod.yaml").is_file()
    # SIGKILL to the batch shell: no EXIT trap runs, as when a job is killed at its time limit
    subprocess.run(["scancel", "--full", "--signal=KILL", job], env=slurm.environ(), check=True)
    slurm.wait(job, tmp_path)
    assert (staged / "envmod.yaml").is_file(), "the killed job left its copy (no trap ran)"
    # what a site's Slurm Epilog runs on each node (README): copies whose jobs are gone go
    sweep = subprocess.run([sys.executable, "-m", "bridge.stage.node", "sweep",
                            str(base)], capture_output=True, text=True, env=slurm.environ())
    assert sweep.returncode == 0 and "released 1 stale copies" in sweep.stdout, sweep.stderr
    assert not staged.exists() and not os.path.ismount(staged)
    assert not list(staged.parent.glob("*.sqfs")) and not list(staged.parent.glob("*.jobs"))


@pytest.fixture(scope="module")
def user_lib(tmp_path_factory) -> Path:
    shared = Path(tempfile.mkdtemp(prefix="envmod-stage-lib-", dir="/tmp"))
    shared.chmod(0o755)
    lib = install_for_users(shared / "envmod")
    yield lib
    shutil.rmtree(shared, ignore_errors=True)


def _fuse_usable_by(as_user: AsUser, user: str) -> bool:
    proc = subprocess.run([as_user.runuser, "-u", user, "--", base_python(), "-c",
                           "import os; os.close(os.open('/dev/fuse', os.O_RDWR))"], capture_output=True)
    return proc.returncode == 0


def test_an_ordinary_user_without_usable_fuse_gets_an_unpacked_copy(slurm, users, user_lib):
    """Real: /dev/fuse as Debian leaves it here (0600) cannot be opened by an ordinary user, so
    squashfuse cannot mount; 'stage' unpacks instead. Where /dev/fuse is 0666 it mounts."""
    require_site()
    alice = users.alice
    work = Path(tempfile.mkdtemp(prefix="envmod-stage-alice-", dir="/tmp"))
    try:
        work.chmod(0o755)
        os.chown(work, alice.uid, alice.gid)
        whl = pure_wheel(work)
        os.chown(whl, alice.uid, alice.gid)
        modules_sh = copy_modules_sh(work)
        base = work / "node-local"
        as_user = AsUser(user_lib)
        env = {"ENVMOD_ROOT": str(work / "root"), "ENVMOD_STAGE_BASE": str(base), "XDG_CACHE_HOME": str(work / "cache")}
        made = as_user.bash(alice, f"""
mkdir -p {shlex.quote(str(base))}
module load python/3.11
$ENVMOD create aenv -q --with {whl}
$ENVMOD pack aenv
""", "lmod", modules_sh, extra_env=env)
        assert made.returncode == 0, made.stderr
        staged = json.loads((work / "root/images/aenv.json").read_text())["staged_prefix"]
        assert f"/envmod-stage/{alice.name}/" in staged
        job_env = {**as_user.environ(alice, env), "SLURM_CONF": str(slurm.conf)}
        script = f"""set -e
source {shlex.quote(str(modules_sh))}
use_lmod
ENVMOD="{base_python()} -m bridge"
$ENVMOD stage aenv
trap '$ENVMOD unstage aenv' EXIT
module use "$ENVMOD_ROOT/modules"
module load aenv/py3.11
python -c 'import sys, stagepkg; print("PREFIX", sys.prefix, stagepkg.__file__)'
"""
        job_file = work / "job.sh"
        job_file.write_text("#!/bin/bash\n" + script)
        job_file.chmod(0o755)
        proc = subprocess.run([as_user.runuser, "-u", alice.name, "--", "sbatch", "--parsable", "-D", str(work),
                               "-o", str(work / "job-%j.out"), str(job_file)],
                              capture_output=True, text=True, env=job_env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        result = slurm.wait(proc.stdout.strip(), work).check()
        expected = "mounted" if _fuse_usable_by(as_user, alice.name) else "unpacked"
        assert f": {expected}" in result.output, result.output
        assert f"PREFIX {staged} {staged}/lib/python3.11/site-packages/stagepkg/__init__.py" in result.output
        assert not Path(staged).exists()
        assert pwd.getpwuid(os.stat(Path(staged).parent).st_uid).pw_name == alice.name
    finally:
        shutil.rmtree(work, ignore_errors=True)
