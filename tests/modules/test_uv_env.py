"""A uv env (``envmod create --backend uv``) in real Lmod and real Environment Modules, without
compiling: what uv does with a package the central Python already provides.

The decision: pip resolves (it sees the central site-packages, and packages a central module
puts on PYTHONPATH, as installed), uv installs exactly pip's plan with --no-deps. Left to itself
uv ignores the central site-packages and PYTHONPATH and would install its own numpy over the
site's (or its own copy of a module's package); an env of envmod's never does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import site_dir, write_wheel

from bridge.store.record import read_record

pytestmark = pytest.mark.modules

# cma is pure Python and requires numpy, which the site's Python provides centrally
SCRIPT = """
module load python/3.11
$ENVMOD create u1 --backend uv --with cma
module purge
module use "$ENVMOD_ROOT/modules"
module load u1/py3.11
python -c 'import cma, numpy; print("numpy", numpy.__file__); print("cma", cma.__file__)'
"""


@pytest.fixture
def uv_cache(tmp_path: Path) -> dict[str, str]:
    return {"UV_CACHE_DIR": str(tmp_path / "uv-cache")}


def test_uv_env_keeps_the_central_numpy_and_loads(shell, uv_cache):
    result = shell.run(SCRIPT, extra_env=uv_cache).check()
    env = shell.root / "envs" / "u1"
    assert "] install: cma (uv)" in result.stderr
    central = site_dir() / "software/python/3.11.2/lib/python3.11/site-packages"
    assert f"numpy {central}/numpy/__init__.py" in result.stdout
    assert f"cma {env}/lib/python3.11/site-packages/cma/" in result.stdout
    assert not list(env.glob("lib/python3.11/site-packages/numpy*"))
    record = read_record(env / "envmod.yaml")
    assert record.backend == "uv"
    assert [p.name.lower() for p in record.packages] == ["cma"]


def test_uv_left_to_itself_would_shadow_the_central_numpy(lmod_shell, uv_cache):
    """Why pip resolves: the same request straight to uv plans a numpy of its own."""
    lmod_shell.run("module load python/3.11\n$ENVMOD create u2 --backend uv", extra_env=uv_cache).check()
    env = lmod_shell.root / "envs" / "u2"
    uv = Path(sys.executable).with_name("uv")       # the test extra's
    proc = subprocess.run([str(uv), "pip", "install", "--dry-run", "--python", str(env / "bin" / "python"), "cma"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **uv_cache})
    assert proc.returncode == 0, proc.stderr
    assert "+ numpy==" in proc.stderr


# ---- a central package on PYTHONPATH (as EasyBuild's and Spack's Python package modules provide them)

PP_LIB = "envmod_pp_lib"


@pytest.fixture
def pythonpath_site(tmp_path: Path) -> dict[str, Path]:
    """A central module ``pplib/1.0`` (Lua and Tcl) putting a package, with its dist-info, on
    PYTHONPATH; and a wheel of the user's that requires it (plus a wheel of the package itself, so
    that an installer that ignores PYTHONPATH has something to install instead)."""
    site_packages = tmp_path / "pplib" / "site-packages"
    (site_packages / PP_LIB).mkdir(parents=True)
    (site_packages / PP_LIB / "__init__.py").write_text("")
    dist = site_packages / f"{PP_LIB}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: envmod-pp-lib\nVersion: 1.0\n")
    (dist / "RECORD").write_text("")
    modules = tmp_path / "modules"
    (modules / "lua" / "pplib").mkdir(parents=True)
    (modules / "tcl" / "pplib").mkdir(parents=True)
    (modules / "lua" / "pplib" / "1.0.lua").write_text(f'prepend_path("PYTHONPATH", "{site_packages}")\n')
    (modules / "tcl" / "pplib" / "1.0").write_text(f"#%Module\nprepend-path PYTHONPATH {{{site_packages}}}\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel_tag = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    write_wheel(wheels / "envmod_pp_user-1.0-py3-none-any.whl", {
        "envmod_pp_user/__init__.py": f"import {PP_LIB}\n".encode(),
        "envmod_pp_user-1.0.dist-info/METADATA":
            b"Metadata-Version: 2.1\nName: envmod-pp-user\nVersion: 1.0\nRequires-Dist: envmod-pp-lib\n",
        "envmod_pp_user-1.0.dist-info/WHEEL": wheel_tag})
    write_wheel(wheels / f"{PP_LIB}-1.0-py3-none-any.whl", {
        f"{PP_LIB}/__init__.py": b"",
        f"{PP_LIB}-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: envmod-pp-lib\nVersion: 1.0\n",
        f"{PP_LIB}-1.0.dist-info/WHEEL": wheel_tag})
    return {"site_packages": site_packages, "modules": modules, "wheels": wheels}


def test_uv_env_keeps_a_central_package_from_pythonpath(shell, uv_cache, pythonpath_site):
    """The package on PYTHONPATH satisfies the requirement: not installed into the env, its
    module recorded as a dependency (evidence), loaded by the env's module, imported from there."""
    site = pythonpath_site
    modules = site["modules"] / ("lua" if shell.system == "lmod" else "tcl")
    user = site["wheels"] / "envmod_pp_user-1.0-py3-none-any.whl"
    result = shell.run(f"""
module use {modules}
module load python/3.11 pplib/1.0
$ENVMOD create pp --backend uv --with {user}
module purge
module use "$ENVMOD_ROOT/modules"
module load pp/py3.11
python -c 'import envmod_pp_user, {PP_LIB}; print("lib", {PP_LIB}.__file__)'
""", extra_env=uv_cache).check()
    env = shell.root / "envs" / "pp"
    assert "] install: envmod-pp-user (uv)" in result.stderr
    assert f"lib {site['site_packages']}/{PP_LIB}/__init__.py" in result.stdout
    assert not list(env.glob(f"lib/python3.11/site-packages/{PP_LIB}*"))
    record = read_record(env / "envmod.yaml")
    assert [p.name for p in record.packages] == ["envmod-pp-user"]
    assert [(r.requires, r.provider) for r in record.requirements] == [("envmod-pp-lib", "pplib/1.0")]
    assert record.module.depends_on == ["python/3.11", "pplib/1.0"]


def test_uv_left_to_itself_ignores_pythonpath(lmod_shell, uv_cache, pythonpath_site):
    """Why pip resolves for uv: with the package on PYTHONPATH, uv plans to install its own."""
    site = pythonpath_site
    lmod_shell.run("module load python/3.11\n$ENVMOD create pp2 --backend uv", extra_env=uv_cache).check()
    env = lmod_shell.root / "envs" / "pp2"
    uv = Path(sys.executable).with_name("uv")
    proc = subprocess.run([str(uv), "pip", "install", "--dry-run", "--python", str(env / "bin" / "python"),
                           "--no-index", "--find-links", str(site["wheels"]), "envmod-pp-user"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **uv_cache, "PYTHONPATH": str(site["site_packages"])})
    assert proc.returncode == 0, proc.stderr
    assert "+ envmod-pp-lib==1.0" in proc.stderr
