"""The site's central conda (ci/conda-site.sh) really creates envs offline from a local channel,
and its module conda/26.7.1 loads in real Lmod and real Environment Modules."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conda.channel import ACTIVATE_VARIABLE, HELLO_MODULE, MPI_LABEL, MPI_PLACEHOLDERS
from tests.conda.conftest import CONDA_VERSION, Conda, CreatedEnv, conda_prefix, conda_site, require_conda
from tests.conftest import REPO
from tests.spack.spack_helpers import fresh_shell

pytestmark = pytest.mark.conda


def by_name(env: CreatedEnv) -> dict[str, dict]:
    return {p["name"]: p for p in env.listing}


def test_create_offline_from_the_local_channel(created_env: CreatedEnv) -> None:
    assert created_env.create["success"] is True
    python = created_env.prefix / "bin" / "python"
    out = subprocess.run([str(python), "-c", f"import sys, {HELLO_MODULE}; print(sys.prefix); print({HELLO_MODULE}.GREETING)"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == [str(created_env.prefix), "hello from conda"]
    pip = subprocess.run([str(created_env.prefix / "bin" / "pip"), "--version"], capture_output=True, text=True, check=True)
    assert str(created_env.prefix / "lib/python3.11/site-packages/pip") in pip.stdout


def test_conda_list_reports_builds_and_channels(created_env: CreatedEnv, channel: Path) -> None:
    packages = by_name(created_env)
    assert {"python", "pip", "envmod-hello", "envmod-activate", "openmpi", "mpi"} <= packages.keys()
    assert packages["python"]["version"] == "3.11.2"
    assert packages["python"]["build_string"] == "h_envmod_venv_0"
    assert packages["envmod-hello"]["build_string"] == "pyh_envmod_0"
    for name in ("python", "pip", "envmod-hello", "envmod-activate"):
        assert packages[name]["base_url"] == f"file://{channel}", packages[name]


def test_mpi_placeholder_resolves_from_the_label_channel(created_env: CreatedEnv, channel: Path) -> None:
    openmpi = by_name(created_env)["openmpi"]
    name, version, build = MPI_PLACEHOLDERS[0]
    assert (openmpi["version"], openmpi["build_string"]) == (version, build)
    assert "external_" not in openmpi["build_string"]   # select by label, never by build string
    assert openmpi["base_url"] == f"file://{channel}/label/{MPI_LABEL}"
    assert by_name(created_env)["mpi"]["build_string"] == "openmpi"
    # a placeholder: nothing of an MPI in the env, the system's (a module's) is used
    meta = json.loads(next((created_env.prefix / "conda-meta").glob(f"openmpi-{version}-*.json")).read_text())
    assert meta["files"] == []
    assert not (created_env.prefix / "bin" / "mpicc").exists()


def test_activate_d_script_runs_under_conda_activation_only(created_env: CreatedEnv, conda: Conda) -> None:
    script = created_env.prefix / "etc/conda/activate.d/envmod-activate.sh"
    assert script.is_file()
    run = conda.run("run", "-p", str(created_env.prefix), "printenv", ACTIVATE_VARIABLE)
    assert (run.returncode, run.stdout.strip()) == (0, "yes"), run.stderr
    # the env's python by its path (as a module would put it on PATH) never runs the script
    plain = subprocess.run([str(created_env.prefix / "bin/python"), "-c", f"import os; print(os.environ.get('{ACTIVATE_VARIABLE}'))"],
                           capture_output=True, text=True, check=True, env={k: v for k, v in os.environ.items() if k != ACTIVATE_VARIABLE})
    assert plain.stdout.strip() == "None"


def test_site_condarc_names_the_site_channels_and_the_classic_solver(conda: Conda) -> None:
    config = conda.json("config", "--show", "channels", "solver")
    assert config["solver"] == "classic"
    assert config["channels"] == [f"file://{conda_site()}/channel", f"file://{conda_site()}/channel/label/{MPI_LABEL}"]
    # without -c: the site's own channels serve a create (dry run: nothing written)
    plan = conda.json("create", "-p", str(conda.home / "never"), "--offline", "--dry-run", "python", "envmod-hello", "mpich")
    fetched = {p["name"]: p for p in plan["actions"]["FETCH"]}
    assert fetched["mpich"]["channel"].startswith(f"file://{conda_site()}/channel/label/{MPI_LABEL}/")
    assert not (conda.home / "never").exists()


@pytest.mark.parametrize("system", ["lmod", "envmodules"])
def test_module_puts_conda_on_path(system: str) -> None:
    require_conda()
    tree = conda_site() / "modules" / ("lua" if system == "lmod" else "tcl")
    result = fresh_shell(system, f"""
module use {shlex.quote(str(tree))}
module load conda/{CONDA_VERSION}
echo "conda=$(command -v conda)"
echo "CONDA_EXE=$CONDA_EXE"
echo "python3=$(command -v python3 || true)"
conda --version
module unload conda/{CONDA_VERSION}
echo "after=$(command -v conda || echo none) ${{CONDA_EXE:-unset}}"
""", timeout=120)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert lines["conda"] == str(conda_prefix() / "condabin/conda")
    assert lines["CONDA_EXE"] == str(conda_prefix() / "bin/conda")
    # only condabin goes on PATH: the installation's own python3 never shadows the site's
    assert not lines["python3"].startswith(str(conda_prefix()))
    assert f"conda {CONDA_VERSION}" in result.stdout
    assert lines["after"] == "none unset"


# ------------------------------------------------------------------------------- ci/conda-site.sh


def run_site_script(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "ci/conda-site.sh")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL)


def test_site_script_without_the_vendored_archive_says_the_tier_skips(tmp_path: Path) -> None:
    proc = run_site_script(ENVMOD_VENDOR=str(tmp_path / "no-vendor"), ENVMOD_CONDA_SITE=str(tmp_path / "site"))
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1 and "conda tier skips" in proc.stderr
    assert not (tmp_path / "site").exists()


def test_site_script_refuses_a_prefix_it_cannot_write_into_modulefiles(tmp_path: Path) -> None:
    vendor = Path(os.environ.get("ENVMOD_VENDOR", REPO.parent / "shared" / "vendor"))
    if not (vendor / f"conda-{CONDA_VERSION}.tar.xz").is_file():
        pytest.skip(f"no vendored conda archive in {vendor} (set ENVMOD_VENDOR)")
    bad = tmp_path / 'it"s'
    proc = run_site_script(ENVMOD_VENDOR=str(vendor), ENVMOD_CONDA_SITE=str(bad))
    assert proc.returncode == 1
    assert proc.stderr.startswith("conda-site: error: ENVMOD_CONDA_SITE") and proc.stderr.count("\n") == 1
    assert not bad.exists()


def test_site_script_is_idempotent() -> None:
    require_conda()
    vendor = Path(os.environ.get("ENVMOD_VENDOR", REPO.parent / "shared" / "vendor"))
    if not (vendor / f"conda-{CONDA_VERSION}.tar.xz").is_file():
        pytest.skip(f"no vendored conda archive in {vendor} (set ENVMOD_VENDOR)")
    proc = run_site_script(ENVMOD_VENDOR=str(vendor), ENVMOD_CONDA_SITE=str(conda_site()))
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout


def test_site_script_without_the_central_python_fails_in_one_line_leaving_nothing(tmp_path: Path) -> None:
    vendor = Path(os.environ.get("ENVMOD_VENDOR", REPO.parent / "shared" / "vendor"))
    if not (vendor / f"conda-{CONDA_VERSION}.tar.xz").is_file():
        pytest.skip(f"no vendored conda archive in {vendor} (set ENVMOD_VENDOR)")
    proc = run_site_script(ENVMOD_VENDOR=str(vendor), ENVMOD_CONDA_SITE=str(tmp_path / "site"),
                           ENVMOD_SITE=str(tmp_path / "no-central-site"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("conda-site: error: the central site's Python") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "site").exists()
