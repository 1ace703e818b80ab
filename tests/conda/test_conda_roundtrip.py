"""conda's file formats through envmod with the site's real conda: an env made from conda's
environment.yml (pure packages and a pip section with a local wheel), exported as conda-yaml and
recreated from that elsewhere holds the same conda packages (name, version, build, channel) and
the same pip packages; and both load under real Lmod and Environment Modules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bridge.emit.export import CONDA_EXPORT_MARKER
from tests.conda.channel import HELLO_MODULE, MPI_LABEL
from tests.conda.conda_user import CondaUser, one_line
from tests.conftest import write_wheel

pytestmark = pytest.mark.conda

WHEEL_MODULE = "envmod_wheelpkg"


def wheel(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return write_wheel(directory / f"{WHEEL_MODULE}-1.0-py3-none-any.whl", {
        f"{WHEEL_MODULE}/__init__.py": b"VALUE = 'from a local wheel'\n",
        f"{WHEEL_MODULE}-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: envmod-wheelpkg\nVersion: 1.0\n",
        f"{WHEEL_MODULE}-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    })


def conda_side(user: CondaUser, name: str) -> set[tuple[str, str, str, str]]:
    return {(p["name"], p["version"], p["build"], p["channel"].rstrip("/")) for p in user.record(name).conda.packages
            if p.get("channel") != "pypi"}


def pip_side(user: CondaUser, name: str) -> set[tuple[str, str]]:
    return {(p.name, p.version) for p in user.record(name).packages}


def test_environment_file_to_conda_yaml_and_back(tmp_path, channel, conda_pkgs):
    user = CondaUser.make(tmp_path / "u", conda_pkgs)
    made = wheel(tmp_path / "project" / "wheels")
    envfile = tmp_path / "project" / "environment.yml"
    envfile.write_text(yaml.safe_dump({
        "name": "ignored-name",
        "channels": [f"file://{channel}", f"file://{channel}/label/{MPI_LABEL}"],
        "dependencies": ["python", "pip", "envmod-hello", {"pip": [f"./wheels/{made.name}"]}],
    }))
    proc = user.envmod("create", "orig", "--backend", "conda", "-f", str(envfile))
    assert proc.returncode == 0, proc.stderr
    assert "sets name 'ignored-name': ignored" in proc.stderr
    original = user.record("orig")
    assert original.backend == "conda" and original.conda is not None
    assert {"python", "pip", "envmod-hello"} <= {p["name"] for p in original.conda.packages}
    assert ("envmod-wheelpkg", "1.0") in pip_side(user, "orig")

    exported = tmp_path / "orig.yml"
    proc = user.envmod("export", "orig", "--format", "conda-yaml", "-o", str(exported))
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load(exported.read_text())
    assert data["channels"] == original.conda.channels
    assert {"pip": ["envmod-wheelpkg==1.0"]} in data["dependencies"]

    # elsewhere: another user (root, caches), the same conda module loaded; the local wheel is
    # found as the site's pip configuration says (find-links)
    other = CondaUser.make(tmp_path / "v", conda_pkgs)
    proc = other.envmod("create", "copy", "--from", str(exported), PIP_FIND_LINKS=str(made.parent))
    assert proc.returncode == 0, proc.stderr
    assert other.record("copy").backend == "conda"
    assert conda_side(other, "copy") == conda_side(user, "orig")
    assert pip_side(other, "copy") == pip_side(user, "orig")

    for system in ("lmod", "envmodules"):
        run = other.in_module_shell(system, f"module load {other.record('copy').module.name}\n"
                                            f"python -c 'import {HELLO_MODULE}, {WHEEL_MODULE}, sys; "
                                            f"print(sys.prefix, {WHEEL_MODULE}.VALUE)'")
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip().endswith("from a local wheel"), run.stdout


def test_create_from_a_conda_export_without_its_modules_loaded_changes_nothing(tmp_path, channel, conda_pkgs):
    user = CondaUser.make(tmp_path / "u", conda_pkgs)
    envfile = tmp_path / "environment.yml"
    envfile.write_text(yaml.safe_dump({"channels": [f"file://{channel}"],
                                       "dependencies": ["python", "envmod-hello"]}))
    assert user.envmod("create", "orig", "--backend", "conda", "-f", str(envfile), "-q").returncode == 0
    exported = tmp_path / "orig.yml"
    assert user.envmod("export", "orig", "--format", "conda-yaml", "-o", str(exported)).returncode == 0
    # the modules it names must be loaded: one that is not (made up here) refuses it
    text = exported.read_text()
    marker = json.loads(text.splitlines()[0][len(CONDA_EXPORT_MARKER):])
    assert marker["modules"] == ["conda/26.7.1"]
    marker["modules"].append("hdf5/1.10.8")
    exported.write_text(CONDA_EXPORT_MARKER + json.dumps(marker) + "\n" + text.split("\n", 1)[1])
    other = CondaUser.make(tmp_path / "w", conda_pkgs)
    line = one_line(other.envmod("create", "copy", "--from", str(exported)))
    assert "not loaded: hdf5/1.10.8" in line and "module load hdf5/1.10.8" in line
    assert other.visible() == []
    # without the conda module: refused in one line too
    bare = CondaUser.make(tmp_path / "x", conda_pkgs, loads="")
    assert "conda" in one_line(bare.envmod("create", "copy", "--from", str(exported)))
    assert bare.visible() == []
