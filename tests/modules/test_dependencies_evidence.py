"""Which central modules an env's module loads: only those the evidence names, or with
``--keep-loaded`` every module that was loaded, in both real module tools.

With python/3.11, openmpi/4.1.4 and hdf5/1.10.8 loaded, an env with nothing compiled in it links
no MPI and no HDF5, so its module must load python/3.11 alone; ``--keep-loaded`` makes it load all
three, in load order. Each env is then loaded in a purged shell to see what the real tool loads,
and ``envmod show`` is read as a user reads it. Nothing here compiles: the one package installed
is a pure-Python wheel written by the test itself (pip installs it offline, from its path).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.conftest import ModuleShell, loaded, site_dir, write_wheel

from bridge.store.record import read_record

pytestmark = pytest.mark.modules

STACK = ["python/3.11", "openmpi/4.1.4", "hdf5/1.10.8"]
LOAD_STACK = "module load " + " ".join(STACK)
CENTRAL_SITE_PACKAGES = site_dir() / "software/python/3.11.2/lib/python3.11/site-packages"


def modulefile(shell: ModuleShell, env: str) -> Path:
    return shell.root / "modules" / env / ("py3.11.lua" if shell.system == "lmod" else "py3.11")


def declared_dependencies(shell: ModuleShell, env: str) -> list[str]:
    """The modules the written modulefile loads, in its order (Lua depends_on, Tcl depends-on)."""
    text = modulefile(shell, env).read_text()
    pattern = r'^depends_on\("([^"]+)"\)' if shell.system == "lmod" else r'depends-on "([^"]+)"'
    return re.findall(pattern, text, flags=re.M)


def create_and_load(shell: ModuleShell, env: str, create_args: str = ""):
    """Create ``env`` with the whole stack loaded, then load it alone in a purged shell."""
    return shell.run(f"""
{LOAD_STACK}
snap stack
$ENVMOD create {env} {create_args}
module purge
module use "$ENVMOD_ROOT/modules"
module load {env}/py3.11
snap during
python -c 'import sys; print("PREFIX", sys.prefix)'
""").check()


def pure_wheel(directory: Path, name: str = "numpyuser", requires: str = "numpy") -> Path:
    """A real pure-Python wheel requiring a package the central Python provides (numpy)."""
    dist = f"{name}-1.0.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\nRequires-Dist: {requires}\n"
    files = {f"{name}/__init__.py": b"import numpy\nVALUE = int(numpy.int64(7))\n",
             f"{dist}/METADATA": meta.encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: envmod-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    return write_wheel(directory / f"{name}-1.0-py3-none-any.whl", files)


def test_env_linking_nothing_central_depends_on_python_only(shell):
    result = create_and_load(shell, "plain")
    assert loaded(result.snapshots["stack"]) == STACK
    record = read_record(shell.root / "envs/plain/envmod.yaml")
    # The whole loaded stack is recorded ...
    assert [m.name for m in record.central_modules] == STACK
    # ... but the evidence names nothing from MPI or HDF5: nothing was installed, nothing links.
    assert record.packages == [] and record.links == [] and record.requirements == []
    assert record.module.depends_on == ["python/3.11"]
    assert declared_dependencies(shell, "plain") == ["python/3.11"]
    text = modulefile(shell, "plain").read_text()
    assert "openmpi" not in text and "hdf5" not in text
    step = re.search(r"\] module: plain/py3\.11 \((lmod|tcl)\) needs (.*)$", result.stderr, flags=re.M)
    assert step and step.group(2) == "python/3.11", result.stderr
    # In a purged shell the real tool loads the Python and the env, and nothing of MPI/HDF5.
    during = result.snapshots["during"]
    assert sorted(loaded(during)) == ["plain/py3.11", "python/3.11"]
    assert not any(k in during for k in ("MPI_HOME", "OPENMPI_ROOT", "HDF5_DIR", "HDF5_MPI"))
    assert f"PREFIX {shell.root / 'envs/plain'}" in result.stdout


def test_keep_loaded_depends_on_every_loaded_module_in_load_order(shell):
    result = create_and_load(shell, "kept", "--keep-loaded")
    record = read_record(shell.root / "envs/kept/envmod.yaml")
    assert record.links == [] and record.requirements == []
    assert record.module.depends_on == STACK
    assert declared_dependencies(shell, "kept") == STACK
    during = result.snapshots["during"]
    assert sorted(loaded(during)) == sorted(STACK + ["kept/py3.11"])
    # The env's own dependencies come in the order it declares them.
    assert [m for m in loaded(during) if m in STACK] == STACK
    assert during["HDF5_DIR"].endswith("/hdf5/1.10.8") and during["MPI_HOME"].endswith("/openmpi/4.1.4")
    assert f"PREFIX {shell.root / 'envs/kept'}" in result.stdout


def test_show_names_what_the_module_loads_and_the_evidence_behind_it(shell, tmp_path):
    wheel = pure_wheel(tmp_path)
    result = shell.run(f"""
{LOAD_STACK}
$ENVMOD create plain -q
$ENVMOD create kept -q --keep-loaded
$ENVMOD create evid -q --with {wheel}
echo '@@ plain'; $ENVMOD show plain
echo '@@ kept'; $ENVMOD show kept
echo '@@ evid'; $ENVMOD show evid
echo '@@ end'
module purge
module use "$ENVMOD_ROOT/modules"
module load evid/py3.11
snap during
python -c 'import numpyuser; print("VALUE", numpyuser.VALUE)'
""").check()
    shown = dict(re.findall(r"^@@ (\w+)\n(.*?)(?=^@@ |\Z)", result.stdout, flags=re.M | re.S))

    def field(text: str, key: str) -> str:
        match = re.search(rf"^  {key}:\s+(.*)$", text, flags=re.M)
        assert match, (key, text)
        return match.group(1)

    # Nothing installed: the module loads the interpreter's module only, and there is no
    # evidence to show (nothing links, nothing requires a central package).
    assert shown["plain"].startswith("plain: venv over python/3.11 (Python 3.11.2)")
    assert field(shown["plain"], "loads") == "python/3.11"
    assert field(shown["plain"], "packages") == "none beyond the central Python"
    assert "evidence:" not in shown["plain"]
    assert "openmpi" not in shown["plain"] and "hdf5" not in shown["plain"]

    assert field(shown["kept"], "loads") == ", ".join(STACK) + " (--keep-loaded: every module loaded at create)"

    # A package requiring numpy: the evidence section says which module provides it, and that
    # is why python/3.11 is loaded; MPI and HDF5 stay out although they were loaded.
    evid = shown["evid"]
    assert field(evid, "loads") == "python/3.11"
    assert field(evid, "packages") == "1"
    assert "    numpyuser 1.0 (requested): binary wheel" in evid
    assert "  evidence:     (env file → library → provider; Python package → provider)" in evid
    evidence = evid.split("evidence:", 1)[1].splitlines()[1:]
    site_numpy = sorted(CENTRAL_SITE_PACKAGES.glob("numpy-*.dist-info"))
    assert site_numpy, "the central Python has no numpy"
    assert evidence == [f"    numpyuser requires numpy → python/3.11 ({site_numpy[-1].name})"]
    record = read_record(shell.root / "envs/evid/envmod.yaml")
    assert [(r.package, r.requires, r.provider) for r in record.requirements] == [("numpyuser", "numpy", "python/3.11")]
    assert record.links == [] and record.module.depends_on == ["python/3.11"]
    # The module loaded alone really gives the package the numpy the evidence names.
    assert sorted(loaded(result.snapshots["during"])) == ["evid/py3.11", "python/3.11"]
    assert "VALUE 7" in result.stdout


def test_rebuild_of_a_keep_loaded_env_keeps_every_module(shell):
    result = shell.run(f"""
{LOAD_STACK}
$ENVMOD create kept -q --keep-loaded
$ENVMOD rebuild kept -q
module purge
module use "$ENVMOD_ROOT/modules"
module load kept/py3.11
snap during
""").check()
    assert "rebuilt kept: nothing needed compiling" in result.stdout
    assert read_record(shell.root / "envs/kept/envmod.yaml").module.depends_on == STACK
    assert declared_dependencies(shell, "kept") == STACK
    assert sorted(loaded(result.snapshots["during"])) == sorted(STACK + ["kept/py3.11"])
