"""A venv (and a uv env) layered on a central *conda* Python: a site whose ``python`` module is a
conda base, as desiconda and NERSC ship it (#12, section 5). The base is made by the site's real
conda from a relocated CPython (tests/conda/conda_base.py); its module ``python/3.11-conda`` is
loaded as a user would, in real Lmod and real Environment Modules.

What must hold: the base is taken as a central Python (a real interpreter in a conda prefix, not
a venv), recorded as the Python's module and loaded by the env's module; a package installed in
the env imports; the base's own packages stay visible and stay the base's (a requirement they
satisfy is not installed again, by pip or by uv); the base's PEP 668 marker, which keeps users
from pip-installing into it, does not stop an env over it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.store.record import read_record
from tests.conda.conda_base import BASE_LIB, BASE_LIB_MODULE, RELOCATED_BUILD, build_base_channel, write_python_modules
from tests.conda.conftest import Conda
from tests.conftest import ModuleShell, loaded, require_tool, site_dir, write_wheel

pytestmark = pytest.mark.conda

PYTHON_MODULE = "python/3.11-conda"
LAYER = "envmod_layer"


@pytest.fixture(scope="module")
def conda_base(conda: Conda, tmp_path_factory) -> Path:
    """The conda base (made once per file by the site's conda) and its python module in Lua and Tcl;
    returns the directory holding the base, the modules and the env's wheel."""
    work = tmp_path_factory.mktemp("conda-base")
    channel = build_base_channel(work / "channel", str(site_dir() / "software/python/3.11.2/bin/python3"),
                                 require_tool("strip"))
    base = work / "base"
    conda.json("create", "-p", str(base), "--offline", "--override-channels", "-c", f"file://{channel}",
               f"python=3.11.2={RELOCATED_BUILD}", "pip", BASE_LIB, "-y")
    # The site keeps users from pip-installing into its base (PEP 668), as a managed base should:
    # an env over it must still take packages.
    (base / "lib/python3.11/EXTERNALLY-MANAGED").write_text(
        "[externally-managed]\nError=the site's conda base: make an env with envmod\n")
    write_python_modules(work / "modules", PYTHON_MODULE, base)
    # the user's package: pure, and requiring the base's own package
    write_wheel(work / f"{LAYER}-1.0-py3-none-any.whl", {
        f"{LAYER}/__init__.py": b"import envmod_base_lib\n",
        f"{LAYER}-1.0.dist-info/METADATA":
            f"Metadata-Version: 2.1\nName: envmod-layer\nVersion: 1.0\nRequires-Dist: {BASE_LIB}\n".encode(),
        f"{LAYER}-1.0.dist-info/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    })
    return work


def test_the_base_is_a_real_conda_prefix_closed_to_pip(conda_base: Path):
    base = conda_base / "base"
    assert (base / "conda-meta" / f"python-3.11.2-{RELOCATED_BUILD}.json").is_file()
    assert not (base / "pyvenv.cfg").exists()          # the interpreter itself, not a venv over one
    assert not (base / "bin" / "python3.11").is_symlink()
    # uv honours the marker (the site's pip 22.3 predates PEP 668 support)
    uv = Path(sys.executable).with_name("uv")
    proc = subprocess.run([str(uv), "pip", "install", "--python", str(base / "bin/python3"), "--dry-run",
                           "--offline", "--no-index", "x"], capture_output=True, text=True, timeout=120)
    # uv wraps its message to the terminal's width: compare words, not lines
    assert proc.returncode != 0 and "externally managed" in " ".join(proc.stderr.split()), proc.stderr


@pytest.mark.parametrize("backend", ["venv", "uv"])
def test_env_over_the_conda_python_records_and_loads_its_module(shell: ModuleShell, conda_base: Path, backend: str,
                                                                tmp_path: Path):
    base = conda_base / "base"
    modules = conda_base / "modules" / ("lua" if shell.system == "lmod" else "tcl")
    wheel = conda_base / f"{LAYER}-1.0-py3-none-any.whl"
    result = shell.run(f"""
module use {modules}
module load {PYTHON_MODULE}
$ENVMOD create over --backend {backend} --with {wheel}
$ENVMOD check over
module purge
module use "$ENVMOD_ROOT/modules"
module load over/py3.11
snap during
python -c 'import sys, {LAYER}, {BASE_LIB_MODULE} as b; print("env", {LAYER}.__file__); print("base", b.__file__)'
python -c 'import sys; print("prefix", sys.prefix)'
""", extra_env={"UV_CACHE_DIR": str(tmp_path / "uv-cache")}).check()
    env = shell.root / "envs" / "over"
    assert f"created over: {backend} over {PYTHON_MODULE} (Python 3.11.2)" in result.stdout
    assert "over: healthy" in result.stdout
    record = read_record(env / "envmod.yaml")
    assert record.python.module == PYTHON_MODULE
    assert record.python.executable == f"{base}/bin/python3"
    assert record.module.depends_on == [PYTHON_MODULE]
    # the base's package satisfied the requirement: only the user's package is in the env
    assert [p.name for p in record.packages] == ["envmod-layer"]
    assert [(r.package, r.provider) for r in record.requirements] == [("envmod-layer", PYTHON_MODULE)]
    assert loaded(result.snapshots["during"]) == [PYTHON_MODULE, "over/py3.11"]
    assert f"env {env}/lib/python3.11/site-packages/{LAYER}/__init__.py" in result.stdout
    assert f"base {base}/lib/python3.11/site-packages/{BASE_LIB_MODULE}/__init__.py" in result.stdout
    assert f"prefix {env}" in result.stdout
