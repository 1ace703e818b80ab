"""The env's packages in its modulefile, as Lmod expects a PythonBundle's extensions to be: the
real Lmod's ``module spider h5py`` finds the env (from its Lua and its Tcl modulefile), and the
real Environment Modules, which has no extensions (it evaluates ``extensions`` as a no-op), loads
the Tcl file and finds the env with ``module search h5py`` (the whatis line)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import ModuleShell

from bridge.emit.modulefile import write_modulefile
from bridge.store.record import EnvRecord, ModuleRecord, PackageRecord, Provenance, PythonRecord, write_record

pytestmark = pytest.mark.modules


def analysis_env(tmp_path: Path) -> EnvRecord:
    prefix = tmp_path / "envs/analysis"
    prefix.mkdir(parents=True)
    record = EnvRecord(
        name="analysis", backend="venv", prefix=str(prefix),
        python=PythonRecord(version="3.11.2", executable="/central/bin/python3"),
        module=ModuleRecord(name="analysis/py3.11", type="lmod"),
        created=Provenance(at="2026-01-01T00:00:00Z", by="u", host="h", envmod_version="0"),
        packages=[PackageRecord(name="mpi4py", version="4.1.2", install="source", requested=True),
                  PackageRecord(name="h5py", version="3.16.0", install="source", requested=True),
                  PackageRecord(name="numpy", version="2.3.5", install="wheel")])
    write_record(record)
    return record


def modules_of(record: EnvRecord, tmp_path: Path) -> dict[str, Path]:
    """Each syntax in a tree of its own (a tool picks one file where both share a directory)."""
    return {t: write_modulefile(record, t, tmp_path / f"modules-{t}").parent.parent for t in ("lmod", "tcl")}


@pytest.mark.parametrize("module_type", ["lmod", "tcl"])
def test_lmod_spider_finds_the_envs_packages(lmod_shell: ModuleShell, tmp_path: Path, module_type: str) -> None:
    trees = modules_of(analysis_env(tmp_path), tmp_path)
    out = lmod_shell.run(f"""
module use {trees[module_type]}
module spider h5py 2>&1
echo @@
module spider h5py/3.16.0 2>&1
""").check().stdout
    listing, detail = out.split("@@")
    assert "h5py/3.16.0" in listing
    assert "analysis/py3.11" in detail, out


def test_environment_modules_loads_it_and_search_finds_the_packages(tcl_shell: ModuleShell, tmp_path: Path) -> None:
    trees = modules_of(analysis_env(tmp_path), tmp_path)
    result = tcl_shell.run(f"""
module use {trees['tcl']}
module search h5py 2>&1
module load analysis/py3.11
echo "loaded=$ENVMOD_ENV"
""").check()
    assert "analysis/py3.11" in result.stdout and "h5py/3.16.0" in result.stdout, result.stdout
    assert "loaded=analysis" in result.stdout
    assert "ERROR" not in result.stderr, result.stderr
