"""A uv env (``envmod create --backend uv``) in real Lmod and real Environment Modules, without
compiling: what uv does with a package the central Python already provides.

The decision: pip resolves (it sees the central site-packages as installed), uv installs exactly
pip's plan with --no-deps. Left to itself uv ignores the central site-packages (and PYTHONPATH)
and would install its own numpy over the site's; an env of envmod's never does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import site_dir

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
