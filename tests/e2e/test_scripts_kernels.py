"""Issue #13, sections 2 and 3, end to end on the real site with mpi4py and h5py compiled against
its OpenMPI and parallel HDF5 (conftest's ``compiled_env``, and ``kenv``, made here from the same
wheels with ``--kernel``):

* the bash, csh and fish exports, sourced in ``env -i`` shells (no module system), run the 2-rank
  parallel HDF5 write (ci/demo.py), from Lmod and from Environment Modules;
* the Jupyter kernel, started by the real jupyter_client, loads the module with Lmod and with
  Environment Modules and runs ``import mpi4py, h5py; print(h5py.get_config().mpi)`` -> True; one
  whose module no longer loads dies with the launcher's message on stderr; an env without
  ipykernel is refused in one line; ``list`` shows the kernels and ``remove`` removes them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from tests.conftest import REPO, ModuleShell, require_module
from tests.modules.test_export_script import SHELLS, source_in

from bridge.store.record import read_record

pytestmark = pytest.mark.slow

MPI_CHECK = "import mpi4py, h5py; print(h5py.get_config().mpi)"


def mpi_as_root() -> dict[str, str]:
    """What ci/modules.sh gives every test shell: Open MPI refuses root without it, and the
    machine may count fewer cores than 2 ranks."""
    allow = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"} if os.getuid() == 0 else {}
    return {**allow, "OMPI_MCA_rmaps_base_oversubscribe": "1"}


@pytest.fixture(scope="module")
def kenv(compiled_env, tmp_path_factory):
    """``kenv``: mpi4py and h5py (compiled_env's builds) and a kernel, by ``create --kernel`` under
    Lmod, then its Tcl modulefile for Environment Modules. Its Lmod shell and Jupyter data dir."""
    base = tmp_path_factory.mktemp("kenv")
    (base / "root").mkdir()
    shell = ModuleShell("lmod", base / "root", base / "cache")
    jupyter = base / "jupyter"
    env = {"ENVMOD_WHEEL_CACHE": str(compiled_env.wheels), "JUPYTER_DATA_DIR": str(jupyter)}
    shell.run("""
module load python/3.11 openmpi/4.1.4 hdf5/1.10.8
$ENVMOD create kenv --with mpi4py h5py --kernel -q
$ENVMOD module kenv --module-type tcl
""", timeout=1200, extra_env=env).check()
    return shell, jupyter, env


def start_kernel(kernels_dir: Path, environment: dict[str, str], kernel: str = "envmod-kenv", **kw):
    """A real jupyter_client KernelManager starting ``kernel`` from ``kernels_dir``."""
    require_module("jupyter_client", "the [test] extra")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=kernel, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels_dir)]))
    km.start_kernel(env=environment, **kw)
    return km


def run_in_kernel(kernels_dir: Path, environment: dict[str, str], code: str, kernel: str = "envmod-kenv") -> str:
    km = start_kernel(kernels_dir, environment, kernel)
    client = km.client()
    try:
        client.start_channels()
        client.wait_for_ready(timeout=120)
        out: list[str] = []
        reply = client.execute_interactive(code, timeout=120, output_hook=lambda msg: out.append(
            msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""))
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(out)
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)


# ---- section 2: no module system ------------------------------------------------------------

@pytest.mark.parametrize("target", SHELLS)
def test_export_script_runs_two_ranks_of_parallel_hdf5_in_a_bare_shell(compiled_env, target, tmp_path):
    shell = compiled_env.shell
    script = tmp_path / f"myenv.{target}"
    shell.run(f"$ENVMOD export myenv --format {target} -o {script}").check()
    proc, _, after = source_in(target, script, tmp_path, mpi_as_root(),
                               then=f"mpirun -n 2 python {REPO}/ci/demo.py {tmp_path}/demo.h5")
    assert proc.returncode == 0, proc.stderr
    assert "2 ranks wrote" in proc.stdout and "read back [0, 10]" in proc.stdout and "mpi=True" in proc.stdout
    assert after["VIRTUAL_ENV"] == str(compiled_env.shell.root / "envs/myenv")
    assert "LOADEDMODULES" not in after and "MODULEPATH" not in after


def test_export_from_environment_modules_runs_two_ranks_in_a_bare_bash(kenv, tmp_path):
    lmod, _, env = kenv
    tcl = ModuleShell("envmodules", lmod.root, lmod.cache)
    tcl.run(f"$ENVMOD export kenv --format bash -o {tmp_path}/kenv.sh", extra_env=env).check()
    assert "from what envmodules" in (tmp_path / "kenv.sh").read_text()
    proc, _, _ = source_in("bash", tmp_path / "kenv.sh", tmp_path, mpi_as_root(),
                           then=f"mpirun -n 2 python {REPO}/ci/demo.py {tmp_path}/demo.h5")
    assert proc.returncode == 0, proc.stderr
    assert "2 ranks wrote" in proc.stdout and "mpi=True" in proc.stdout


# ---- section 3: Jupyter kernels -------------------------------------------------------------

def test_create_kernel_installs_a_kernel_that_loads_the_modules_with_lmod(kenv):
    lmod, jupyter, env = kenv
    spec = json.loads((jupyter / "kernels/envmod-kenv/kernel.json").read_text())
    assert spec["metadata"]["envmod"]["module"] == "kenv/py3.11"
    record = read_record(lmod.root / "envs/kenv/envmod.yaml")
    assert [k["dir"] for k in record.kernels] == [str(jupyter / "kernels/envmod-kenv")]
    assert any(p.name.lower() == "ipykernel" and p.requested for p in record.packages)
    out = run_in_kernel(jupyter / "kernels", lmod.environment(), MPI_CHECK + "; import sys; print(sys.executable)")
    assert out.split() == ["True", str(lmod.root / "envs/kenv/bin/python")]


def test_kernel_loads_the_modules_with_environment_modules(kenv, tmp_path):
    lmod, _, env = kenv
    tcl = ModuleShell("envmodules", lmod.root, lmod.cache)
    run = tcl.run(f"$ENVMOD kernel kenv --prefix {tmp_path}/shared --display-name 'kenv: MPI \"HDF5\" ü'",
                  extra_env=env).check()
    kernels = tmp_path / "shared/share/jupyter/kernels"
    assert f"in {kernels}/envmod-kenv" in run.stdout
    spec = json.loads((kernels / "envmod-kenv/kernel.json").read_text())
    assert spec["display_name"] == 'kenv: MPI "HDF5" ü' and spec["metadata"]["envmod"]["module_tool"] == "envmodules"
    assert run_in_kernel(kernels, tcl.environment(), MPI_CHECK).split() == ["True"]


def test_a_kernel_whose_module_no_longer_loads_dies_saying_so(kenv, tmp_path):
    lmod, jupyter, _ = kenv
    hidden = tmp_path / "elsewhere"           # a MODULEPATH without the site's central modules
    hidden.mkdir()
    environment = {**lmod.environment(), "MODULEPATH": str(hidden)}
    km = start_kernel(jupyter / "kernels", environment, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not km.is_alive()
        process = km.provisioner.process
        assert process.returncode == 1
        stderr = process.stderr.read().decode()
    finally:
        km.cleanup_resources()
    assert "envmod kernel envmod-kenv: module kenv/py3.11 did not load" in stderr
    assert "not starting any other Python" in stderr


def test_kernel_for_an_env_without_ipykernel_is_refused_in_one_line(compiled_env, tmp_path):
    run = compiled_env.shell.run(f"$ENVMOD kernel myenv --prefix {tmp_path}/k")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "ipykernel is not installed in myenv" in lines[0] and "--with ipykernel" in lines[0]
    assert not (tmp_path / "k").exists()
    assert read_record(compiled_env.shell.root / "envs/myenv/envmod.yaml").kernels == []


def test_list_shows_the_kernels_and_remove_removes_them(kenv, tmp_path):
    lmod, jupyter, env = kenv
    lmod.run(f"$ENVMOD kernel kenv --prefix {tmp_path}/p", extra_env=env).check()
    dirs = [k["dir"] for k in read_record(lmod.root / "envs/kenv/envmod.yaml").kernels]
    assert {str(jupyter / "kernels/envmod-kenv"), str(tmp_path / "p/share/jupyter/kernels/envmod-kenv")} <= set(dirs)
    listing = lmod.run("$ENVMOD list --json", extra_env=env).check()
    assert json.loads(listing.stdout)[0]["kernels"] == ["envmod-kenv"] * len(dirs)
    lmod.run("$ENVMOD remove kenv --yes", extra_env=env).check()
    assert [d for d in dirs if os.path.exists(d)] == []
