"""End to end, for each conda-env backend: ``--backend conda`` with the site's real conda 26.7.1
(module conda/26.7.1 loaded), and ``--backend rattler`` with real py-rattler and no Anaconda tool
at all (no conda module, no conda on PATH, no CONDA_EXE/MAMBA_EXE). With the central Python,
OpenMPI and HDF5 modules loaded: one env per backend with a pure conda package, the activate.d
package and mpi4py + h5py compiled against the central OpenMPI/HDF5 (reused from the run's
compiled_env wheel cache: the same libraries, so no second compile), made once per backend for
this file under real Lmod, then loaded alone in fresh shells under real Lmod and real Environment
Modules, where 2 MPI ranks write one HDF5 file in parallel."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.build.backends.rattler import rattler_version
from bridge.store.record import EnvRecord, read_record
from tests.conda.channel import ACTIVATE_VARIABLE, HELLO_MODULE, MPI_LABEL
from tests.conda.conftest import CONDA_VERSION, conda_site, require_conda
from tests.conftest import REPO, ModuleShell, ShellResult, loaded, skip_or_fail

pytestmark = [pytest.mark.slow, pytest.mark.conda]

NAME = "cenv"
MODULE = f"{NAME}/py3.11"
CENTRAL = ("python/3.11", "openmpi/4.1.4", "hdf5/1.10.8")
CONDA_MODULE = f"conda/{CONDA_VERSION}"


@dataclass(frozen=True)
class Flavour:
    """What differs between the backends: the modules loaded at create, and the conda module the
    env's module depends on (None: rattler needs none)."""
    backend: str
    loads: tuple[str, ...]
    conda_module: str | None

    @property
    def depends_on(self) -> list[str]:
        return [m for m in (self.conda_module, "openmpi/4.1.4", "hdf5/1.10.8") if m]


FLAVOURS = {"conda": Flavour("conda", (CONDA_MODULE, *CENTRAL), CONDA_MODULE),
            "rattler": Flavour("rattler", CENTRAL, None)}


def conda_shell(system: str, root: Path, cache: Path) -> ModuleShell:
    return ModuleShell(system, root, cache)


def conda_setup(system: str, channel: Path, home: Path) -> str:
    """Shell lines: the conda site's modules visible, envmod's config naming the test channel
    (and its MPI label), conda's package cache private to the test."""
    tree = conda_site() / "modules" / ("lua" if system == "lmod" else "tcl")
    config = home / "config.yaml"
    config.write_text(f"conda_channels: [file://{channel}, file://{channel}/label/{MPI_LABEL}]\n")
    return (f'module use "{tree}"\n'
            f'export ENVMOD_CONFIG="{config}" CONDA_PKGS_DIRS="{home}/pkgs" HOME="{home}"\n')


@dataclass
class MadeEnv:
    shell: ModuleShell
    result: ShellResult
    record: EnvRecord
    channel: Path
    home: Path
    flavour: Flavour


@pytest.fixture(scope="module", params=sorted(FLAVOURS))
def made(request, compiled_env, channel, tmp_path_factory) -> MadeEnv:
    flavour = FLAVOURS[request.param]
    require_conda()     # the conda site's modules and config, for rattler too (its conda is never run)
    if flavour.backend == "rattler" and rattler_version() is None:
        skip_or_fail("py-rattler is not installed (it comes with envmod's [test] extra)")
    base = tmp_path_factory.mktemp(f"{flavour.backend}-e2e")
    home = base / "home"
    home.mkdir()
    shell = conda_shell("lmod", base / "root", base / "cache")
    # rattler: no Anaconda tool within reach of the create (checked on the 'create' snapshot)
    no_conda = "unset CONDA_EXE MAMBA_EXE\n" if flavour.backend == "rattler" else ""
    result = shell.run(conda_setup("lmod", channel, home) + f"""
module load {' '.join(flavour.loads)}
{no_conda}snap create
$ENVMOD create {NAME} --backend {flavour.backend} --conda envmod-hello envmod-activate --with mpi4py h5py --description "conda + MPI"
$ENVMOD module {NAME} --module-type tcl
""", timeout=1800, extra_env={"ENVMOD_WHEEL_CACHE": str(compiled_env.wheels)})
    result.check()
    return MadeEnv(shell, result, read_record(base / "root/envs" / NAME / "envmod.yaml"), channel, home, flavour)


def test_create_reuses_the_compiled_builds_and_names_what_made_it(made: MadeEnv) -> None:
    via = made.flavour.conda_module or made.record.conda.engine["executable"]
    assert f"created {NAME}: {made.flavour.backend} env made with {via} (Python 3.11.2)" in made.result.stdout
    assert "] reuse mpi4py" in made.result.stderr and "] reuse h5py" in made.result.stderr


def test_rattler_create_had_no_anaconda_tool_within_reach(made: MadeEnv) -> None:
    if made.flavour.backend != "rattler":
        pytest.skip("the conda backend runs the site's conda by design")
    env = made.result.snapshots["create"]
    assert "CONDA_EXE" not in env and "MAMBA_EXE" not in env
    assert all(shutil.which(tool, path=env["PATH"]) is None for tool in ("conda", "mamba", "micromamba"))
    assert CONDA_MODULE not in loaded(env)


def test_record_holds_the_conda_side_and_the_mpi_pin(made: MadeEnv) -> None:
    record, conda = made.record, made.record.conda
    assert record.backend == made.flavour.backend and conda is not None
    if made.flavour.backend == "conda":
        assert conda.engine["tool"] == "conda" and conda.engine["version"] == CONDA_VERSION
        assert conda.engine["module"] == CONDA_MODULE and conda.engine["solver"] == "classic"
    else:
        assert conda.engine["tool"] == "rattler" and conda.engine["version"] == rattler_version()
        assert conda.engine["module"] is None and conda.engine["solver"] == "resolvo"
    label = f"file://{made.channel}/label/{MPI_LABEL}"
    assert conda.channels == [label, f"file://{made.channel}"]        # the placeholders' label first
    assert conda.mpi_pin == f"{label}::openmpi=4.1.4"
    # python pinned to the central Python's 3.11, pip for the pip packages, the user's, the pin
    assert conda.specs == ["python=3.11", "pip", "envmod-hello", "envmod-activate", conda.mpi_pin]
    packages = {p["name"]: p for p in conda.packages}
    assert packages["openmpi"]["channel"] == label                   # the placeholder, by its label
    assert packages["python"]["version"] == "3.11.2" and packages["envmod-hello"]["build"] == "pyh_envmod_0"
    assert conda.conda_mpi_allowed is False
    assert conda.activate_env == {ACTIVATE_VARIABLE: "yes"}
    compiled = {p.name.lower(): p.built_against for p in record.packages if p.install == "source"}
    assert compiled == {"mpi4py": ["openmpi/4.1.4"], "h5py": ["hdf5/1.10.8", "openmpi/4.1.4"]}


def test_module_depends_on_its_conda_and_the_modules_the_evidence_names(made: MadeEnv) -> None:
    record = made.record
    assert record.module.depends_on == made.flavour.depends_on
    libmpi = [e for e in record.links if e.needs == "libmpi.so.40" and "/mpi4py/" in e.file]
    assert libmpi and {e.provider for e in libmpi} == {"openmpi/4.1.4"}


def test_build_never_moves_and_the_name_is_a_link_to_it(made: MadeEnv) -> None:
    link = made.shell.root / "envs" / NAME
    assert link.is_symlink()
    build = Path(os.path.realpath(link))
    assert build.parent == made.shell.root / "envs" / ".builds" and build.name.startswith(f"{NAME}@")
    assert made.record.prefix == str(build)
    assert (build / "conda-meta" / "history").is_file()


@pytest.mark.parametrize("system", ["lmod", "envmodules"])
def test_env_module_alone_runs_parallel_hdf5_with_two_ranks(made: MadeEnv, system: str, tmp_path: Path) -> None:
    shell = ModuleShell(system, made.shell.root, made.shell.cache)
    run = shell.run(conda_setup(system, made.channel, made.home) + f"""
module purge
module use "$ENVMOD_ROOT/modules"
module load {MODULE}
snap during
mpirun -n 2 python {REPO}/ci/demo.py {tmp_path}/demo.h5
python -c "import {HELLO_MODULE}, sys; print({HELLO_MODULE}.GREETING, sys.prefix)"
module unload {MODULE}
snap after
""", timeout=600).check()
    during = run.snapshots["during"]
    assert set(loaded(during)) == {*made.flavour.depends_on, MODULE}
    assert "2 ranks wrote" in run.stdout and "read back [0, 10]" in run.stdout and "mpi=True" in run.stdout
    assert f"hello from conda {made.record.prefix}" in run.stdout
    assert during[ACTIVATE_VARIABLE] == "yes"
    assert during["CONDA_PREFIX"] == during["CONDA_DEFAULT_ENV"] == made.record.prefix
    assert during["PYTHONNOUSERSITE"] == "1"
    assert during["PATH"].split(":")[0] == f"{made.record.prefix}/bin"
    assert made.record.prefix not in during.get("LD_LIBRARY_PATH", "")
    assert loaded(run.snapshots["after"]) == []
    assert ACTIVATE_VARIABLE not in run.snapshots["after"]


def test_show_check_and_export(made: MadeEnv, tmp_path: Path) -> None:
    run = made.shell.run(conda_setup("lmod", made.channel, made.home) + f"""
{'module load ' + made.flavour.conda_module if made.flavour.conda_module else ''}
$ENVMOD show {NAME}
$ENVMOD check {NAME}
$ENVMOD export {NAME} -o {tmp_path}/cenv.yaml
""", timeout=600).check()
    engine = made.record.conda.engine
    assert (f"conda {CONDA_VERSION} from {CONDA_MODULE}" if made.flavour.conda_module else
            f"rattler {engine['version']} ({engine['executable']})") in run.stdout
    assert f"pinned to the external placeholder file://{made.channel}/label/{MPI_LABEL}::openmpi=4.1.4" in run.stdout
    assert f"{NAME}: healthy" in run.stdout
    assert "h5py" in (tmp_path / "cenv.yaml").read_text()


def test_remove_deletes_the_link_the_build_and_the_module(made: MadeEnv) -> None:
    build = Path(made.record.prefix)
    made.shell.run(f"$ENVMOD remove {NAME} --yes").check()
    assert not (made.shell.root / "envs" / NAME).exists() and not (made.shell.root / "envs" / NAME).is_symlink()
    assert not build.exists()
    assert not (made.shell.root / "modules" / NAME).exists() or not any((made.shell.root / "modules" / NAME).iterdir())
