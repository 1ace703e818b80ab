"""``envmod stage`` of conda-format envs in a real Slurm job (issues #12 and #14), for each backend:
``--backend rattler`` (real py-rattler, no Anaconda tool) and ``--backend conda`` (the conda site's
real conda 26.7.1). Each env, made from the test channel with a pure conda package, the activate.d
package and a pip wheel, plus mpi4py compiled against the central OpenMPI (reused from the run's
compiled_env wheel cache: no compile here), is packed (its prefix rewritten for the node-local
path), staged by a batch script with sbcast and squashfuse, and run from the node-local copy: the
env's module (real Lmod, and real Environment Modules) points CONDA_PREFIX and PATH at the copy
and sets the activate.d variable there, and 2 ranks under ``srun --mpi=pmix`` import nothing from
the shared env. The one-line refusals a job meets (unstage before stage, stage of a stale image),
a repack inside the job, and the release by the job's EXIT trap are checked too."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.build.backends.rattler import rattler_version
from tests.conda.channel import ACTIVATE_VARIABLE, HELLO_MODULE, MPI_LABEL, build_channel
from tests.conda.conftest import CONDA_VERSION, conda_site, require_conda
from tests.conftest import ModuleShell, require_site, site_dir, skip_or_fail
from tests.slurm.test_stage import job_preamble, pure_wheel

pytestmark = pytest.mark.slurm

NAME = "renv"
MODULE = f"{NAME}/py3.11"

RANK_PROBE = rf'''
import json, os, sys
out, shared = sys.argv[1], [os.path.realpath(p) for p in sys.argv[2:]]
from mpi4py import MPI
import {HELLO_MODULE}, stagepkg
comm = MPI.COMM_WORLD
files = sorted({{os.path.realpath(m.__file__) for m in list(sys.modules.values()) if getattr(m, "__file__", None)}})
with open("/proc/self/maps") as fh:
    mapped = sorted({{line.split()[-1] for line in fh if "/" in line.split()[-1]}})
# one file per rank: two ranks' long lines on one stdout would interleave
with open(f"{{out}}.rank{{comm.rank}}.json", "w") as fh:
    json.dump({{"rank": comm.rank, "size": comm.size, "ranks": comm.allgather(comm.rank), "prefix": sys.prefix,
               "mpi4py": sys.modules["mpi4py"].__file__, "hello": {HELLO_MODULE}.__file__,
               "stagepkg": stagepkg.__file__, "mapped": mapped, "activated": os.environ.get("{ACTIVATE_VARIABLE}"),
               "conda_prefix": os.environ.get("CONDA_PREFIX"),
               "shared": [p for p in files + mapped if any(p == s or p.startswith(s + "/") for s in shared)]}}, fh)
print("HELLO rank", comm.rank, "of", comm.size)
'''


@dataclass
class Packed:
    backend: str
    root: Path
    base: Path               # the node-local stage base
    build: Path              # the env's build directory (envs/NAME links to it)
    manifest: dict
    create_output: str
    module_use: str          # shell lines: what else the env's module needs on MODULEPATH (tool: lmod or tcl)

    def setup(self, system: str) -> str:
        return self.module_use.replace("@TREE@", "lua" if system == "lmod" else "tcl")


@pytest.fixture(scope="module", params=["rattler", "conda"])
def packed(request, compiled_env, tmp_path_factory) -> Packed:
    """The env made with real py-rattler (no Anaconda tool within reach) or with the conda
    site's real conda 26.7.1 (its module loaded, so a dependency of the env's), then packed."""
    backend = request.param
    require_site()
    module_use, loads = "", "python/3.11 openmpi/4.1.4"
    if backend == "rattler":
        if rattler_version() is None:
            skip_or_fail("py-rattler is not installed (it comes with envmod's [test] extra)")
        tools = "unset CONDA_EXE MAMBA_EXE\n"
    else:
        require_conda()
        module_use = f'module use {shlex.quote(str(conda_site()))}/modules/@TREE@\n'
        loads = f"conda/{CONDA_VERSION} {loads}"
        tools = ""
    work = tmp_path_factory.mktemp(f"{backend}-stage")
    root, base, home = work / "root", work / "node-local", work / "home"
    for directory in (root, base, home):
        directory.mkdir()
    channel = build_channel(work / "channel", str(site_dir() / "software/python/3.11.2/bin/python3"))
    config = home / "config.yaml"
    config.write_text(f"conda_channels: [file://{channel}, file://{channel}/label/{MPI_LABEL}]\n")
    shell = ModuleShell("lmod", root, work / "cache")
    made = shell.run(f"""
export ENVMOD_CONFIG={shlex.quote(str(config))} HOME={shlex.quote(str(home))} CONDA_PKGS_DIRS={shlex.quote(str(home / "pkgs"))}
{tools}{module_use.replace("@TREE@", "lua")}module load {loads}
$ENVMOD create {NAME} --backend {backend} --conda envmod-hello envmod-activate --with mpi4py {pure_wheel(work)}
$ENVMOD module {NAME} --module-type tcl
$ENVMOD pack {NAME}
""", timeout=1800, extra_env={"ENVMOD_WHEEL_CACHE": str(compiled_env.wheels), "ENVMOD_STAGE_BASE": str(base)})
    made.check()
    build = Path(os.path.realpath(root / "envs" / NAME))
    assert build.parent.name == ".builds", build
    manifest = json.loads((root / "images" / f"{NAME}.json").read_text())
    return Packed(backend, root, base, build, manifest, made.stdout + made.stderr, module_use)


def test_staged_conda_env_runs_mpi_from_the_node_local_copy(slurm, packed: Packed, tmp_path):
    # the run's compiled mpi4py was reused: nothing compiled for this env
    assert "reuse mpi4py" in packed.create_output, packed.create_output
    assert packed.manifest["backend"] == packed.backend and packed.manifest["format"] == "squashfs"
    staged = packed.manifest["staged_prefix"]
    (tmp_path / "probe.py").write_text(RANK_PROBE)
    out = tmp_path / "out"
    result = slurm.run(job_preamble(packed.root) + f"""
rc=0; $ENVMOD unstage {NAME} 2>err.txt || rc=$?
echo "EARLY rc=$rc lines=$(wc -l < err.txt) $(cat err.txt)"
$ENVMOD stage {NAME}
trap '$ENVMOD unstage {NAME}' EXIT
echo "MOUNT=$(findmnt -n -o FSTYPE {shlex.quote(staged)} || echo none)"
# Environment Modules on the node too (a subshell: the Lmod load below is the job's)
(use_envmodules
{packed.setup("tcl")}module use "$ENVMOD_ROOT/modules"
module load {MODULE}
echo "TCL $CONDA_PREFIX ${{{ACTIVATE_VARIABLE}:-unset}} $(python -c 'import sys; print(sys.prefix)')")
{packed.setup("lmod")}module use "$ENVMOD_ROOT/modules"
module load {MODULE}
echo "CONDA_PREFIX=$CONDA_PREFIX"
echo "CONDA_DEFAULT_ENV=$CONDA_DEFAULT_ENV"
echo "PATH0=${{PATH%%:*}}"
echo "ACTIVATED=${{{ACTIVATE_VARIABLE}:-unset}}"
echo "PYTHON=$(command -v python)"
srun --mpi=pmix -n 2 python {tmp_path / 'probe.py'} {out} "$ENVMOD_ROOT/envs/{NAME}" {packed.build}
""", tmp_path, ["-n", "2"]).check()
    text = result.output
    early = next(line for line in text.splitlines() if line.startswith("EARLY"))
    assert f"rc=2 lines=1 envmod: error: job {result.id} has not staged '{NAME}'" in early, text
    assert f"staged {NAME} (squashfs," in text and ": mounted" in text, text
    assert "MOUNT=fuse.squashfuse" in text, text
    # the module chose the copy: CONDA_PREFIX, PATH, and the activate.d variable set there
    for line in (f"CONDA_PREFIX={staged}", f"CONDA_DEFAULT_ENV={staged}", f"PATH0={staged}/bin",
                 "ACTIVATED=yes", f"PYTHON={staged}/bin/python"):
        assert line in text.splitlines(), f"{line!r} not in\n{text}"
    assert f"TCL {staged} yes {staged}" in text.splitlines(), text
    assert "HELLO rank 0 of 2" in text and "HELLO rank 1 of 2" in text, text
    ranks = sorted((json.loads(p.read_text()) for p in tmp_path.glob("out.rank*.json")), key=lambda p: p["rank"])
    assert [p["rank"] for p in ranks] == [0, 1], text
    site = f"{staged}/lib/python3.11/site-packages"
    for p in ranks:
        assert p["size"] == 2 and p["ranks"] == [0, 1]
        assert p["prefix"] == p["conda_prefix"] == staged
        assert p["activated"] == "yes"
        assert p["hello"] == f"{site}/{HELLO_MODULE}/__init__.py"      # the conda package
        assert p["stagepkg"] == f"{site}/stagepkg/__init__.py"          # the pip wheel
        assert p["mpi4py"] == f"{site}/mpi4py/__init__.py"              # compiled against central OpenMPI
        assert p["shared"] == [], f"rank {p['rank']} touched the shared env: {p['shared']}"
        # mpi4py's extension was mapped from the copy, and libmpi from the central OpenMPI
        assert any(m.startswith(f"{site}/mpi4py/") and m.endswith(".so") for m in p["mapped"]), p["mapped"]
        assert any("/libmpi.so" in m and not m.startswith(staged) for m in p["mapped"]), p["mapped"]
    # the EXIT trap released it: nothing left on the node, the job's note under the root gone
    assert ": released" in text, text
    assert not Path(staged).exists() and not any(Path(staged).parent.glob("*.sqfs"))
    assert not list((packed.root / ".envmod/staged").iterdir())
    assert not list(packed.base.glob(".envmod-incoming-*"))
    # the shared env is as it was: its link still names its build, which still runs
    assert Path(os.path.realpath(packed.root / "envs" / NAME)) == packed.build
    assert (packed.build / "bin/python").is_file()


def test_stale_conda_image_is_refused_in_one_line_and_repacked_in_the_job(slurm, packed: Packed, tmp_path):
    """Runs after the test above (same env): a wheel pip-installed into the conda env makes its
    image stale; 'stage' refuses it in one line, 'stage --repack' packs and relocates it again
    inside the job, to a new node-local path the module then uses."""
    other = pure_wheel(tmp_path, "otherpkg")
    pip = packed.root / "envs" / NAME / "bin/pip"
    installed = ModuleShell("lmod", packed.root, tmp_path / "cache").run(
        f"module load python/3.11 openmpi/4.1.4\n{pip} install -q --no-index {other}")
    installed.check()
    old = packed.manifest["staged_prefix"]
    result = slurm.run(job_preamble(packed.root) + f"""
rc=0; $ENVMOD stage {NAME} 2>err.txt || rc=$?
echo "REFUSED rc=$rc lines=$(wc -l < err.txt) $(cat err.txt)"
ENVMOD_STAGE_BASE={shlex.quote(str(packed.base))} $ENVMOD stage {NAME} --repack
trap '$ENVMOD unstage {NAME}' EXIT
{packed.setup("lmod")}module use "$ENVMOD_ROOT/modules"
module load {MODULE}
echo "ACTIVATED=${{{ACTIVATE_VARIABLE}:-unset}}"
python -c 'import sys, otherpkg, {HELLO_MODULE}; print("PREFIX", sys.prefix, otherpkg.__file__)'
""", tmp_path).check()
    text = result.output
    refused = next(line for line in text.splitlines() if line.startswith("REFUSED"))
    assert f"rc=2 lines=1 envmod: error: the image of '{NAME}' is stale" in refused, text
    staged = json.loads((packed.root / "images" / f"{NAME}.json").read_text())["staged_prefix"]
    assert staged != old and ": mounted" in text, text
    assert "ACTIVATED=yes" in text.splitlines(), text
    assert f"PREFIX {staged} {staged}/lib/python3.11/site-packages/otherpkg/__init__.py" in text, text
    assert not Path(staged).exists() and not Path(old).exists()
