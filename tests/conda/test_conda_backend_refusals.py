"""``--backend conda`` with the site's real conda: what it refuses (one line, nothing left behind),
the conda-MPI rule and its ``--allow-conda-mpi``, and a killed create. Nothing here compiles."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bridge.build.backends.rattler import rattler_version
from bridge.store.record import read_record
from tests.conda.channel import CONDA_MPI, MPI_APP, MPI_LABEL, build_channel
from tests.conda.conftest import CONDA_VERSION, conda_site, require_conda
from tests.conftest import REPO, ModuleShell, envmod_command, require_site, site_dir

pytestmark = pytest.mark.conda


@pytest.fixture(scope="module")
def mpi_channel(tmp_path_factory) -> Path:
    """The test channel whose main label also holds a real conda openmpi and a package needing it."""
    require_site()
    return build_channel(tmp_path_factory.mktemp("conda-mpi-channel") / "channel",
                         str(site_dir() / "software/python/3.11.2/bin/python3"), conda_mpi=True)


class CondaShell:
    """A real Lmod shell with the conda site's modules visible and envmod configured for ``channels``."""

    def __init__(self, tmp: Path, channels: list[str]) -> None:
        require_conda()
        self.home = tmp / "home"
        self.home.mkdir()
        (self.home / "config.yaml").write_text(f"conda_channels: [{', '.join(channels)}]\n")
        self.shell = ModuleShell("lmod", tmp / "root", tmp / "cache")
        self.root = self.shell.root

    def run(self, script: str, modules: str = f"conda/{CONDA_VERSION} python/3.11 openmpi/4.1.4"):
        return self.shell.run(f"""
set +e
module use "{conda_site()}/modules/lua"
export ENVMOD_CONFIG="{self.home}/config.yaml" CONDA_PKGS_DIRS="{self.home}/pkgs" HOME="{self.home}"
module load {modules}
{script}
""", timeout=600)

    def nothing_left(self, name: str) -> bool:
        envs = self.root / "envs"
        builds = list((envs / ".builds").glob(f"{name}@*")) if (envs / ".builds").is_dir() else []
        return not (envs / name).is_symlink() and not (envs / name).exists() and not builds \
            and not (self.root / "modules" / name).exists()


def channels_of(channel: Path) -> list[str]:
    return [f"file://{channel}", f"file://{channel}/label/{MPI_LABEL}"]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_a_spec_dragging_in_a_conda_mpi_is_refused_naming_it(mpi_channel: Path, tmp_path: Path) -> None:
    shell = CondaShell(tmp_path, channels_of(mpi_channel))
    run = shell.run(f"$ENVMOD create m1 --backend conda --conda envmod-hello {MPI_APP} -q; echo rc=$?")
    assert "rc=3" in run.stdout
    (line,) = error_lines(run.stderr)
    assert line.startswith(f"envmod: error: conda spec '{MPI_APP}' would install conda's own MPI "
                           f"({CONDA_MPI[0]} {CONDA_MPI[1]} {CONDA_MPI[2]} from file://{mpi_channel})")
    assert "instead of using the central openmpi/4.1.4" in line and "--allow-conda-mpi" in line
    assert shell.nothing_left("m1")


@pytest.mark.parametrize("backend, modules", [("conda", f"conda/{CONDA_VERSION} python/3.11"),
                                               ("rattler", "python/3.11")])
def test_without_an_mpi_module_a_conda_mpi_found_in_the_install_is_refused_and_the_build_discarded(
        mpi_channel: Path, tmp_path: Path, backend: str, modules: str) -> None:
    """No MPI module: no pin, so the one solve is the install's; the conda MPI it linked is
    refused before the env goes live, and its build is gone."""
    if backend == "rattler" and rattler_version() is None:
        pytest.skip("py-rattler is not installed (it comes with envmod's [test] extra)")
    shell = CondaShell(tmp_path, channels_of(mpi_channel))
    run = shell.run(f"$ENVMOD create m4 --backend {backend} --conda envmod-hello {MPI_APP} -q; echo rc=$?",
                    modules=modules)
    assert "rc=3" in run.stdout
    (line,) = error_lines(run.stderr)
    assert line.startswith(f"envmod: error: conda spec '{MPI_APP}' would install conda's own MPI "
                           f"({CONDA_MPI[0]} {CONDA_MPI[1]} {CONDA_MPI[2]} from file://{mpi_channel})"), line
    assert "instead of using a central MPI module" in line
    assert shell.nothing_left("m4")


def test_allow_conda_mpi_accepts_it_and_records_so(mpi_channel: Path, tmp_path: Path) -> None:
    shell = CondaShell(tmp_path, channels_of(mpi_channel))
    shell.run(f"$ENVMOD create m2 --backend conda --conda {MPI_APP} --allow-conda-mpi -q").check()
    conda = read_record(shell.root / "envs/m2/envmod.yaml").conda
    assert conda is not None and conda.conda_mpi_allowed is True and conda.mpi_pin is None
    openmpi = next(p for p in conda.packages if p["name"] == "openmpi")
    assert (openmpi["version"], openmpi["build"], openmpi["channel"]) == (CONDA_MPI[1], CONDA_MPI[2],
                                                                          f"file://{mpi_channel}")
    # the conda MPI's own library is in the env, yet never on LD_LIBRARY_PATH of its module
    assert (shell.root / "envs/m2/lib/libmpi.so.40").is_file()
    assert "LD_LIBRARY_PATH" not in (shell.root / "modules/m2/py3.11.lua").read_text()


def test_a_plain_openmpi_spec_gets_the_external_placeholder(mpi_channel: Path, tmp_path: Path) -> None:
    """With both a conda openmpi and the placeholder on the channels, the pin selects the placeholder."""
    shell = CondaShell(tmp_path, channels_of(mpi_channel))
    shell.run("$ENVMOD create m3 --backend conda --conda openmpi -q").check()
    conda = read_record(shell.root / "envs/m3/envmod.yaml").conda
    assert conda is not None
    openmpi = next(p for p in conda.packages if p["name"] == "openmpi")
    assert openmpi["channel"] == f"file://{mpi_channel}/label/{MPI_LABEL}" and openmpi["version"] == "4.1.4"


@pytest.mark.parametrize("spec, says", [
    ("envmod-no-such-package", "conda solve failed: PackagesNotFoundInChannelsError: not available from the channels"),
    ("--offline", "'--offline' is a conda option, not a package spec"),
])
def test_a_spec_that_does_not_resolve_is_one_line_leaving_nothing(channel: Path, tmp_path: Path, spec: str,
                                                                 says: str) -> None:
    shell = CondaShell(tmp_path, channels_of(channel))
    run = shell.run(f"$ENVMOD create bad --backend conda --conda=envmod-hello --conda={spec} -q; echo rc=$?")
    assert "rc=0" not in run.stdout
    (line,) = error_lines(run.stderr)
    assert says in line
    assert shell.nothing_left("bad")


def test_an_unreachable_channel_is_one_line_leaving_nothing(tmp_path: Path) -> None:
    shell = CondaShell(tmp_path, [f"file://{tmp_path}/no-such-channel"])
    run = shell.run("$ENVMOD create far --backend conda --conda envmod-hello -q; echo rc=$?")
    assert "rc=3" in run.stdout
    (line,) = error_lines(run.stderr)
    assert "UnavailableInvalidChannel" in line and f"{tmp_path}/no-such-channel" in line
    assert shell.nothing_left("far")


def test_missing_conda_is_one_line_leaving_nothing(channel: Path, tmp_path: Path) -> None:
    shell = CondaShell(tmp_path, channels_of(channel))
    run = shell.run("unset CONDA_EXE MAMBA_EXE\n$ENVMOD create none --backend conda --conda envmod-hello -q; echo rc=$?",
                    modules="python/3.11")
    assert "rc=2" in run.stdout
    (line,) = error_lines(run.stderr)
    assert "the conda backend needs conda, which is neither named by CONDA_EXE/MAMBA_EXE nor on PATH" in line
    assert shell.nothing_left("none")


def test_conda_specs_need_a_conda_backend(channel: Path, tmp_path: Path) -> None:
    shell = CondaShell(tmp_path, channels_of(channel))
    run = shell.run("$ENVMOD create v --conda envmod-hello -q; echo rc=$?")
    assert "rc=2" in run.stdout
    (line,) = error_lines(run.stderr)
    assert "conda packages, channels and --allow-conda-mpi need a conda backend, not venv" in line


def test_killed_create_leaves_nothing_visible_and_force_keeps_the_old_env_until_replaced(channel: Path,
                                                                                         tmp_path: Path) -> None:
    shell = CondaShell(tmp_path, channels_of(channel))
    shell.run("$ENVMOD create k --backend conda --conda envmod-hello -q").check()
    old = os.path.realpath(shell.root / "envs/k")
    # a --force create killed (SIGKILL: no clean-up) once conda is writing its new build
    script = f"""source {REPO}/ci/modules.sh; use_lmod
module use "{conda_site()}/modules/lua"; module load conda/{CONDA_VERSION} python/3.11 openmpi/4.1.4
export ENVMOD_ROOT="{shell.root}" XDG_CACHE_HOME="{shell.shell.cache}" ENVMOD_CONFIG="{shell.home}/config.yaml"
export CONDA_PKGS_DIRS="{shell.home}/pkgs" HOME="{shell.home}"
exec {envmod_command()} create k --backend conda --conda envmod-hello envmod-activate --force -q
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LMOD", "MODULE", "__LMOD", "_ModuleTable"))}
    proc = subprocess.Popen(["bash", "--noprofile", "--norc", "-c", script], env=env, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
            (b / "conda-meta").is_dir() for b in (shell.root / "envs/.builds").glob("k@*") if str(b) != old):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = [b for b in (shell.root / "envs/.builds").glob("k@*") if str(b) != old]
    assert leftovers, "the killed create had started a build"
    # the old env is untouched and still the one its name and module point at
    assert os.path.realpath(shell.root / "envs/k") == old
    assert old in (shell.root / "modules/k/py3.11.lua").read_text()
    assert [line for line in shell.run("$ENVMOD list").stdout.splitlines() if line.startswith("k ")]
    # the next create of that name (under its lock) removes the leftover, then replaces the old build
    shell.run("$ENVMOD create k --backend conda --conda envmod-hello --force -q").check()
    new = os.path.realpath(shell.root / "envs/k")
    assert new != old and not Path(old).exists()
    assert sorted(str(b) for b in (shell.root / "envs/.builds").glob("k@*")) == [new]
    assert new in (shell.root / "modules/k/py3.11.lua").read_text()



def test_concurrent_creates_of_one_name_make_one_env(channel: Path, tmp_path: Path) -> None:
    shell = CondaShell(tmp_path, channels_of(channel))
    run = shell.run("""
for i in 1 2 3 4; do ( $ENVMOD create same --backend conda --conda envmod-hello -q; echo "rc=$?" ) & done
wait
""")
    codes = sorted(line for line in run.stdout.splitlines() if line.startswith("rc="))
    assert codes == ["rc=0", "rc=5", "rc=5", "rc=5"], run.stdout + run.stderr
    assert run.stderr.count("envmod: error: environment 'same' is busy") == 3
    builds = list((shell.root / "envs/.builds").glob("same@*"))
    assert [str(b) for b in builds] == [os.path.realpath(shell.root / "envs/same")]
