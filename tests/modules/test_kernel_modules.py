"""``envmod kernel`` with a real module tool and no compiled env: an env without a
Tcl modulefile cannot get an Environment Modules kernel (Environment Modules could not load it),
one line, nothing written; ``create --force`` carries kernels to the new env or removes them."""

from __future__ import annotations

import json

import pytest
from tests.conftest import ModuleShell
from tests.modules.test_export_script import hostile_env

from bridge.store.record import read_record

pytestmark = pytest.mark.modules


def test_environment_modules_kernel_needs_the_tcl_modulefile(tcl_shell: ModuleShell, tmp_path):
    hostile_env(tcl_shell.root)                   # its record names no Tcl modulefile
    run = tcl_shell.run(f"$ENVMOD kernel hostile --prefix {tmp_path}/k")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "hostile has no Tcl modulefile" in lines[0]
    assert "envmod module hostile --module-type tcl" in lines[0]
    assert not (tmp_path / "k").exists()


def test_create_force_carries_the_kernels_to_the_new_env(lmod_shell: ModuleShell, tmp_path):
    """``create --force`` replaces the env: its kernel is installed again for the new one (same
    place, same display name), or removed, saying so, when the new env has no ipykernel."""
    jupyter = tmp_path / "jupyter"
    env = {"JUPYTER_DATA_DIR": str(jupyter)}
    spec = jupyter / "kernels/envmod-small/kernel.json"
    run = lmod_shell.run("""
module load python/3.11
$ENVMOD create small --kernel -q
$ENVMOD kernel small --display-name "Small one"
$ENVMOD create small --force --with ipykernel -q
""", timeout=900, extra_env=env).check()
    assert f"updated the Jupyter kernel {spec.parent}" in run.stderr
    assert json.loads(spec.read_text())["display_name"] == "Small one"
    assert read_record(lmod_shell.root / "envs/small/envmod.yaml").kernels == [
        {"name": "envmod-small", "dir": str(spec.parent), "display_name": "Small one"}]
    run = lmod_shell.run("module load python/3.11\n$ENVMOD create small --force -q", timeout=900, extra_env=env).check()
    assert f"removed the Jupyter kernel {spec.parent}" in run.stderr and "ipykernel is not installed" in run.stderr
    assert not spec.parent.exists()
    assert read_record(lmod_shell.root / "envs/small/envmod.yaml").kernels == []
