"""``pip install .`` ships what envmod needs at run time: the templates, the data tables and the
``envmod`` command, and an installed envmod finds them without the source checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from tests.conftest import REPO

TEMPLATES = [p.relative_to(REPO).as_posix() for p in sorted((REPO / "templates").rglob("*.j2"))]
DATA = [p.relative_to(REPO / "src").as_posix() for p in sorted((REPO / "src/bridge/data").glob("*.yaml"))]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [built] = out.glob("envmod-*.whl")
    return built


def test_the_wheel_holds_every_template_and_data_table_and_the_command(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        entry_points = next(whl.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert TEMPLATES and DATA
    for template in TEMPLATES:
        assert "bridge/" + template in names
    for table in DATA:
        assert table in names
    assert "envmod = bridge.cli:command_line" in entry_points


def test_an_installed_envmod_renders_from_its_own_templates(wheel, tmp_path):
    """The wheel unpacked away from the checkout (what pip install does) creates an env whose
    modulefile comes from the templates inside the package."""
    site = tmp_path / "site-packages"
    (tmp_path / "none.yaml").write_text("{}\n")
    with zipfile.ZipFile(wheel) as whl:
        whl.extractall(site)
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("needs /usr/bin/python3 as the central Python")
    # the test venv's own site-packages bring jinja2 and PyYAML; PYTHONPATH puts the unpacked
    # wheel in front of this checkout's src (an editable install's .pth comes later)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(site), "ENVMOD_ROOT": str(tmp_path / "root"),
        "ENVMOD_CONFIG": str(tmp_path / "none.yaml"), "ENVMOD_SITE_CONFIG": str(tmp_path / "none.yaml"),
        "XDG_CACHE_HOME": str(tmp_path / "cache")}
    where = subprocess.run([sys.executable, "-c",
                            "import bridge.emit.templating as t; print(t.builtin_template_dir())"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()) == site / "bridge" / "templates"
    proc = subprocess.run([sys.executable, "-m", "bridge", "create", "packaged", "--python", "/usr/bin/python3",
                           "--module-type", "tcl", "-q"], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    module = tmp_path / "root" / "modules" / "packaged"
    [tcl] = [p for p in module.iterdir()]
    assert tcl.read_text().startswith("#%Module")


def test_test_files_have_names_of_their_own():
    """pytest imports a test file by its basename (rootdir-relative, no packages): two of one name in
    different tiers make the second an import error, and its tests never run."""
    tests = Path(__file__).resolve().parents[1]
    names = [p.name for p in tests.rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
