"""``envmod export --format conda-yaml`` and ``envmod create --from`` of one: conda's
environment.yml of a conda env's record (made in-test), read back by YAML as conda's structure,
recognised by its marker line; bad input is one line. The CLI cases run the real ``python -m bridge``."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from tests.unit.test_cli import one_error_line
from tests.unit.test_record import make_record

from bridge.build.backends.conda_engine import CondaPackage
from bridge.emit.export import CONDA_EXPORT_MARKER, read_export, render_export
from bridge.errors import UsageError
from bridge.store.record import CondaRecord, PackageRecord, write_record

CHANNEL = "file:///srv/conda/channel"
LABEL = f"{CHANNEL}/label/mpi-external"


def conda_record(prefix, **overrides):
    packages = [CondaPackage("python", "3.11.2", "h_envmod_0", CHANNEL, "linux-64"),
                CondaPackage("pip", "24.0", "pyh_0", CHANNEL, "noarch"),
                CondaPackage("envmod-hello", "1.0", "0", CHANNEL, "noarch"),
                CondaPackage("openmpi", "4.1.4", "h_external_0", LABEL, "linux-64")]
    pip_listed = {"name": "mpi4py", "version": "3.1.5", "build": "pypi_0", "channel": "pypi", "subdir": ""}
    record = make_record(prefix, backend="conda", **overrides)
    record.module.depends_on = ["conda/26.7.1", "python/3.11.2", "openmpi/4.1.4"]
    record.conda = CondaRecord(
        engine={"tool": "conda", "version": "26.7.1", "module": "conda/26.7.1"},
        channels=[CHANNEL, LABEL], specs=["envmod-hello", "pip", "openmpi=4.1.4"],
        packages=[p.as_dict() for p in packages] + [pip_listed], mpi_pin="openmpi=4.1.4")
    return record


@pytest.fixture
def stored(run):
    prefix = run.root / "envs" / "condaenv"
    prefix.mkdir(parents=True)
    record = conda_record(prefix, name="condaenv")
    write_record(record, prefix)
    return record


def test_conda_yaml_is_condas_structure_every_package_pinned(tmp_path):
    record = conda_record(tmp_path)
    text = render_export(record, "conda-yaml")
    data = yaml.safe_load(text)
    assert data == {
        "name": "myenv",
        "channels": [CHANNEL, LABEL],
        "dependencies": ["python=3.11.2=h_envmod_0", "pip=24.0=pyh_0", "envmod-hello=1.0=0",
                         "openmpi=4.1.4=h_external_0",
                         # pip's packages only in the pip section (conda list's 'pypi' entries left out)
                         {"pip": ["mpi4py==3.1.5", "numpy==1.26.4"]}],
    }
    lines = text.splitlines()
    assert lines[0].startswith(CONDA_EXPORT_MARKER)
    marker = json.loads(lines[0][len(CONDA_EXPORT_MARKER):])
    assert marker["modules"] == ["conda/26.7.1", "python/3.11.2", "openmpi/4.1.4"]
    assert marker["backend"] == "conda" and marker["description"] == record.description
    assert "#   module load conda/26.7.1 python/3.11.2 openmpi/4.1.4" in lines
    assert "#   envmod create NEWNAME --from THIS_FILE" in lines


def test_conda_yaml_renders_hostile_values_inert(tmp_path):
    record = conda_record(tmp_path, name="x", description='"]] $(id) `id`\n- evil: 1')
    record.conda.channels = ["file:///c\"\n- evil", "ok"]
    record.conda.packages = [CondaPackage("a", "1", "b\n  - pip: [evil]", "ok").as_dict()]
    text = render_export(record, "conda-yaml")
    data = yaml.safe_load(text)
    assert data["channels"] == ["file:///c\"\n- evil", "ok"]
    assert data["dependencies"][0] == "a=1=b\n  - pip: [evil]"
    assert json.loads(text.splitlines()[0][len(CONDA_EXPORT_MARKER):])["description"] == record.description


def test_a_pip_package_conda_also_lists_is_not_pinned_twice(tmp_path):
    record = conda_record(tmp_path)
    record.packages.append(PackageRecord(name="envmod_hello", version="1.0", install="wheel"))
    pip = yaml.safe_load(render_export(record, "conda-yaml"))["dependencies"][-1]["pip"]
    assert pip == ["mpi4py==3.1.5", "numpy==1.26.4"]


def test_a_venv_env_has_no_conda_yaml(run, tmp_path):
    prefix = run.root / "envs" / "myenv"
    prefix.mkdir(parents=True)
    write_record(make_record(prefix), prefix)
    proc = run("export", "myenv", "--format", "conda-yaml")
    assert proc.returncode == 2
    assert "myenv is a venv env, not a conda one" in one_error_line(proc)


def test_the_export_reads_back_as_what_create_from_needs(run, stored, tmp_path):
    out = tmp_path / "condaenv.yml"
    proc = run("export", "condaenv", "--format", "conda-yaml", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    exported = read_export(out)
    assert exported.backend == "conda"
    assert exported.modules == ["conda/26.7.1", "python/3.11.2", "openmpi/4.1.4"]
    assert exported.conda_channels == [CHANNEL, LABEL]
    assert exported.conda_specs == ["python=3.11.2=h_envmod_0", "pip=24.0=pyh_0", "envmod-hello=1.0=0",
                                    "openmpi=4.1.4=h_external_0"]
    assert exported.requirements == ["mpi4py==3.1.5", "numpy==1.26.4"]
    assert exported.description == stored.description


def test_create_from_a_conda_export_checks_its_modules_first(run, stored, tmp_path):
    out = tmp_path / "condaenv.yml"
    assert run("export", "condaenv", "--format", "conda-yaml", "-o", str(out)).returncode == 0
    proc = run("create", "again", "--from", str(out), "--python", sys.executable, "--module-type", "lmod",
               "--backend", "venv")
    assert "is the export of a conda env; a venv env installs pip packages only" in one_error_line(proc)
    assert not (run.root / "envs" / "again").exists()


def test_a_plain_environment_file_given_to_from_points_at_f(tmp_path):
    path = tmp_path / "environment.yml"
    path.write_text("name: x\nchannels: [conda-forge]\ndependencies: [numpy]\n")
    with pytest.raises(UsageError, match="is a conda environment file, not an envmod export") as info:
        read_export(path)
    assert f"create NAME -f {path}" in info.value.one_line()


@pytest.mark.parametrize("first_line, message", [
    ("{not json", "not a readable envmod conda-yaml marker"),
    ('{"schema": 7}', "schema 7 is not supported"),
    ('["x"]', "is not supported"),
    ('{"schema": 1, "modules": [{"a": 1}]}', "not a list of module names"),
])
def test_a_damaged_marker_is_one_line(tmp_path, first_line, message):
    path = tmp_path / "export.yml"
    path.write_text(f"{CONDA_EXPORT_MARKER}{first_line}\ndependencies: [numpy]\n")
    with pytest.raises(UsageError, match=message):
        read_export(path)


def test_an_edited_export_is_checked_as_an_environment_file(tmp_path):
    path = tmp_path / "export.yml"
    path.write_text(f'{CONDA_EXPORT_MARKER}{{"schema": 1, "modules": []}}\ndependencies: [--override-channels]\n')
    with pytest.raises(UsageError, match="is a conda option"):
        read_export(path)
