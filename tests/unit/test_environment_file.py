"""``envmod create NAME -f environment.yml``: conda's environment file read into conda specs,
channels and pip requirements; every bad file is one line naming the file and the problem, and
nothing is made. The CLI cases run the real ``python -m bridge``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import write_wheel
from tests.unit.test_cli import one_error_line

from bridge.build.environment_file import check_conda_spec, read_environment_file, spec_name
from bridge.errors import EnvmodError, UsageError

GOOD = """\
name: analysis
channels:
  - ./channel
  - file:///srv/conda/channel/label/mpi-external
  - nodefaults
dependencies:
  - python=3.11
  - pip
  - envmod-hello=1.0=0
  - mpi-external::openmpi
  - pip:
    - requests>=2
    - ./wheels/hello-1.0-py3-none-any.whl
"""


def write(tmp_path: Path, text: str, name: str = "environment.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_specs_channels_and_pip_section_are_read(tmp_path):
    (tmp_path / "channel").mkdir()
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "hello-1.0-py3-none-any.whl").write_bytes(b"")
    envfile = read_environment_file(write(tmp_path, GOOD.replace("mpi-external::", "")))
    assert envfile.conda_specs == ["python=3.11", "pip", "envmod-hello=1.0=0", "openmpi"]
    # a relative channel and a relative wheel are the file's, as conda reads them; nodefaults is dropped
    assert envfile.channels == [str(tmp_path / "channel"), "file:///srv/conda/channel/label/mpi-external"]
    assert envfile.pip_requirements == ["requests>=2", str(tmp_path / "wheels" / "hello-1.0-py3-none-any.whl")]
    assert envfile.ignored == {"name": "analysis"}
    assert envfile.conda_specs_for("conda") == envfile.conda_specs
    with pytest.raises(UsageError, match=r"asks for conda packages \(python=3.11, envmod-hello=1.0=0, openmpi\)"):
        envfile.conda_specs_for("venv")


def test_a_pip_only_file_fits_every_backend(tmp_path):
    envfile = read_environment_file(write(tmp_path, "dependencies: [python, pip, {pip: [requests]}]\n"))
    assert envfile.conda_specs_for("venv") == envfile.conda_specs_for("uv") == []
    assert envfile.conda_specs_for("rattler") == ["python", "pip"]
    assert envfile.pip_requirements == ["requests"]


def test_a_channel_prefix_must_name_a_listed_channel(tmp_path):
    text = "channels: [conda-forge/label/mpi-external, file:///c]\ndependencies: [conda-forge::numpy, c::x]\n"
    assert read_environment_file(write(tmp_path, text)).conda_specs == ["conda-forge::numpy", "c::x"]
    assert spec_name("conda-forge::NumPy>=1.2") == "numpy"


@pytest.mark.parametrize("text, message", [
    ("dependencies: [\n", "not valid YAML"),
    ("- numpy\n", "not a mapping"),
    ("dependencies: numpy\n", "'dependencies' must be a list"),
    ("channels: conda-forge\ndependencies: [numpy]\n", "'channels' must be a list"),
    ("dependencies: []\n", "lists no dependencies"),
    ("name: x\n", "lists no dependencies"),
    ("dependencies: [numpy]\nchannel: [evil]\n", "unknown key 'channel'"),
    ("dependencies: [numpy]\nvariables: {OMP_NUM_THREADS: '4'}\n", "'variables' are set by 'conda activate'"),
    ("dependencies: [{pip: requests}]\n", "'pip' must be a list"),
    ("dependencies: [{pip: [requests]}, {pip: [six]}]\n", "a second 'pip:' section"),
    ("dependencies: [{conda: [numpy]}]\n", "may only be 'pip:'"),
    ("dependencies: [{pip: [--index-url=http://evil/simple]}]\n", "pip option"),
    ("dependencies: [{pip: [-r other.txt]}]\n", "pip option"),
    ("dependencies: [{pip: [-e .]}]\n", "pip option"),
    ("dependencies: [{pip: [3]}]\n", "pip entry 1: 3 is not a requirement"),
    ("dependencies: [{pip: ['requests; ;']}]\n", "not a valid requirement"),
    ("dependencies: [--override-channels]\n", "is a conda option"),
    ("dependencies: ['numpy -c http://evil']\n", "is a conda option"),
    ("dependencies: ['-c', 'http://evil']\n", "is a conda option"),
    ("dependencies: [\"numpy\\nevil\"]\n", "control character"),
    ("dependencies: [evil::numpy]\n", "channel 'evil', which is not one of the channels"),
    ("channels: [conda-forge]\ndependencies: ['http://evil.example/c::numpy']\n", "not one of the channels"),
    ("dependencies: ['numpy[channel=http://evil]']\n", "names where to fetch it from"),
    ("dependencies: ['numpy[version=1.2, url=http://evil/x.conda]']\n", "names where to fetch it from"),
    ("dependencies: [3]\n", "3 is not a conda package spec"),
    ("dependencies: [null]\n", "None is not a conda package spec"),
    ("channels: [--override-channels]\ndependencies: [numpy]\n", "is a conda option, not a channel"),
    ("channels: ['a b']\ndependencies: [numpy]\n", "white space"),
    ("channels: [[x]]\ndependencies: [numpy]\n", "is not a channel"),
])
def test_bad_files_are_one_line_naming_the_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(EnvmodError, match=message) as info:
        read_environment_file(path)
    line = info.value.one_line()
    assert str(path) in line and "\n" not in line


def test_unreadable_files_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="cannot read environment file"):
        read_environment_file(tmp_path / "missing.yml")
    path = tmp_path / "latin1.yml"
    path.write_bytes(b"dependencies: [caf\xe9]\n")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_environment_file(path)


def test_check_conda_spec_alone():
    assert check_conda_spec(" numpy >=1.2,<2 ", "--conda") == "numpy >=1.2,<2"
    assert check_conda_spec("numpy=1.26=py311_0", "--conda") == "numpy=1.26=py311_0"
    for bad in ("$(id)", "]]"):
        # not options: conda itself refuses them as specs (never through a shell)
        assert check_conda_spec(bad, "--conda") == bad


# ---- the command line --------------------------------------------------------------------

def _base_python() -> str:
    return subprocess.run([sys.executable, "-c", "import sys; print(sys._base_executable)"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_create_with_a_pip_only_file_in_a_venv_installs_its_pip_section(run, tmp_path):
    wheel = write_wheel(tmp_path / "envmod_hello-1.0-py3-none-any.whl", {
        "envmod_hello/__init__.py": b"GREETING = 'hello'\n",
        "envmod_hello-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: envmod-hello\nVersion: 1.0\n",
        "envmod_hello-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    })
    path = write(tmp_path, f"name: other\ndependencies:\n  - python\n  - pip\n  - pip:\n    - ./{wheel.name}\n")
    proc = run("create", "fromfile", "-f", str(path), "--python", _base_python(), "--module-type", "lmod")
    assert proc.returncode == 0, proc.stderr
    assert f"{path} sets name 'other': ignored, the env is 'fromfile'" in proc.stderr
    shown = run("show", "fromfile", "--json")
    assert '"name": "envmod-hello"' in shown.stdout
    assert not (run.root / "envs" / "other").exists()


@pytest.mark.parametrize("args, text, message", [
    ((), "dependencies: [numpy, {pip: [requests]}]\n", "asks for conda packages (numpy); a venv env"),
    (("--backend", "uv"), "dependencies: [python=3.9]\n", "asks for conda packages (python=3.9); a uv env"),
    ((), "dependencies: [{pip: [--pre]}]\n", "pip option"),
    (("--from", "x.yaml"), "dependencies: [pip]\n", "--from and -f cannot be combined"),
])
def test_create_with_a_bad_file_is_one_line_and_makes_nothing(run, tmp_path, args, text, message):
    path = write(tmp_path, text)
    proc = run("create", "fromfile", "-f", str(path), *args, "--python", _base_python(), "--module-type", "lmod")
    assert proc.returncode == 2
    assert message in one_error_line(proc)
    assert not (run.root / "envs" / "fromfile").exists()
    assert not (run.root / "modules" / "fromfile").exists()


@pytest.mark.parametrize("module_version, release", [("4.1.4", "4.1.4"), ("4.1.4-d2lqwco", "4.1.4"),
                                                     ("5.0.3-gcc12", "5.0.3"), ("4", "4"), ("default", None),
                                                     (None, None)])
def test_the_mpi_placeholder_pin_takes_the_release_of_a_module_version(module_version, release):
    """Spack names a module openmpi/4.1.4-d2lqwco: the placeholder to pin is openmpi=4.1.4."""
    from bridge.build.backends.condaenv import mpi_release

    assert mpi_release(module_version) == release
