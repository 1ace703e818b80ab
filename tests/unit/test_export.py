"""``envmod export`` and ``envmod create --from``: the export is made from the record alone and
read back; bad input is one line. Runs the real ``python -m bridge``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.unit.test_cli import one_error_line
from tests.unit.test_record import make_record

from bridge.emit.export import export_data, pinned_requirements, read_export, render_export
from bridge.errors import RecordError, UsageError
from bridge.store.record import write_record


@pytest.fixture
def stored(run):
    """A record under the CLI's root, as a create leaves it."""
    prefix = run.root / "envs" / "myenv"
    prefix.mkdir(parents=True)
    record = make_record(prefix)
    record.central_modules[0].facts.update(spack_hash="d2lqwco4vy257a5mvpuwhuqorxdqs2ur",
                                          spack_spec="openmpi@4.1.4/d2lqwco", spack_external=True)
    write_record(record, prefix)
    return record


def test_requested_packages_come_first_pinned(tmp_path):
    record = make_record(tmp_path)
    assert pinned_requirements(record) == ["mpi4py==3.1.5", "numpy==1.26.4"]


def test_yaml_export_names_modules_with_their_spack_builds(run, stored):
    proc = run("export", "myenv")
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load(proc.stdout)
    assert data == export_data(stored)
    assert data["modules"] == [{"name": "python/3.11.2"},
                               {"name": "openmpi/4.1.4", "kind": "mpi", "family": "openmpi", "version": "4.1.4",
                                "abi": "openmpi", "spack_hash": "d2lqwco4vy257a5mvpuwhuqorxdqs2ur",
                                "spack_spec": "openmpi@4.1.4/d2lqwco", "spack_external": True}]
    assert data["packages"][0] == {"name": "mpi4py", "version": "3.1.5", "requested": True, "install": "source",
                                   "built_against": ["openmpi/4.1.4"]}
    assert data["description"] == stored.description      # newlines and quotes survive YAML


def test_requirements_export_is_a_pip_file_with_the_modules_in_its_header(run, stored):
    proc = run("export", "myenv", "--format", "requirements")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "#   module load python/3.11.2 openmpi/4.1.4" in lines
    assert "#   mpi4py 3.1.5 against openmpi/4.1.4" in lines
    assert [line for line in lines if line and not line.startswith("#")] == ["mpi4py==3.1.5", "numpy==1.26.4"]


def test_a_module_name_with_a_line_break_cannot_inject_a_requirement(tmp_path):
    record = make_record(tmp_path)
    record.module.depends_on = ["evil\nevilpkg==6.6.6"]
    with pytest.raises(RecordError, match="control character"):
        render_export(record, "requirements")


def test_output_file_is_written_atomically_and_never_replaced_silently(run, stored, tmp_path):
    out = tmp_path / "myenv.yaml"
    proc = run("export", "myenv", "-o", str(out))
    assert proc.returncode == 0 and f"wrote {out}" in proc.stdout
    assert yaml.safe_load(out.read_text())["name"] == "myenv"
    assert oct(out.stat().st_mode & 0o044) != "0o0"                # readable by the group: made to share
    out.write_text("mine\n")
    proc = run("export", "myenv", "-o", str(out))
    assert proc.returncode == 2 and "--force" in one_error_line(proc)
    assert out.read_text() == "mine\n"
    assert run("export", "myenv", "-o", str(out), "--force").returncode == 0
    proc = run("export", "myenv", "-o", str(tmp_path / "no/such/dir/x.yaml"))
    assert proc.returncode == 2 and "does not exist" in one_error_line(proc)


def test_export_of_a_missing_env_is_not_found(run):
    proc = run("export", "nosuch")
    assert proc.returncode == 4 and "nosuch" in one_error_line(proc)


@pytest.mark.parametrize("text, message", [
    ("name: x\n", "not an envmod export"),
    ("envmod_export: 9\n", "schema 9"),
    ("envmod_export: 1\nmodules: [{nom: x}]\n", "malformed"),
    ("envmod_export: [\n", "not valid YAML"),
])
def test_bad_export_files_are_one_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        read_export(path)


def test_create_from_an_export_refuses_when_no_module_meets_its_needs(run, stored, tmp_path):
    out = tmp_path / "myenv.yaml"
    assert run("export", "myenv", "-o", str(out)).returncode == 0
    proc = run("create", "again", "--from", str(out), "--python", sys.executable, "--module-type", "lmod")
    line = one_error_line(proc)
    assert "built against python/3.11.2 (Python 3.11.2): no compatible python module is loaded or available" in line
    assert "--map python=MODULE" in line
    assert not (run.root / "envs" / "again").exists()


def test_create_from_an_export_of_no_modules_and_no_packages(run, tmp_path):
    base = subprocess.run([sys.executable, "-c", "import sys; print(sys._base_executable)"],
                          capture_output=True, text=True).stdout.strip()
    prefix = run.root / "envs" / "bare"
    prefix.mkdir(parents=True)
    record = make_record(prefix, name="bare", packages=[], central_modules=[], description="plain")
    record.module.depends_on = []
    write_record(record, prefix)
    out = tmp_path / "bare.yaml"
    assert run("export", "bare", "-o", str(out)).returncode == 0
    proc = run("create", "copy", "--from", str(out), "--python", base, "--module-type", "lmod", "-q")
    assert proc.returncode == 0, proc.stderr
    shown = run("show", "copy", "--json")
    assert '"description": "plain"' in shown.stdout


def _bare_export(run, tmp_path, backend: str) -> tuple[str, Path]:
    """An export of an env of no modules and no packages made by ``backend``; the base Python."""
    base = subprocess.run([sys.executable, "-c", "import sys; print(sys._base_executable)"],
                          capture_output=True, text=True).stdout.strip()
    prefix = run.root / "envs" / "bare"
    prefix.mkdir(parents=True)
    record = make_record(prefix, name="bare", packages=[], central_modules=[])
    record.module.depends_on = []
    record.backend = backend
    write_record(record, prefix)
    out = tmp_path / "bare.yaml"
    assert run("export", "bare", "-o", str(out)).returncode == 0
    return base, out


def test_create_from_an_export_makes_the_env_with_its_backend(run, tmp_path):
    """Recreating a uv env makes a uv env (not the default venv); --backend still decides."""
    base, out = _bare_export(run, tmp_path, "uv")
    assert yaml.safe_load(out.read_text())["backend"] == "uv"
    proc = run("create", "same", "--from", str(out), "--python", base, "--module-type", "lmod", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "created same: uv over" in proc.stdout
    proc = run("create", "told", "--from", str(out), "--backend", "venv", "--python", base,
               "--module-type", "lmod", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "created told: venv over" in proc.stdout


def test_an_export_naming_an_unknown_backend_is_one_line(run, tmp_path):
    base, out = _bare_export(run, tmp_path, "uv")
    out.write_text(out.read_text().replace("backend: uv", "backend: pixi"))
    line = one_error_line(run("create", "x", "--from", str(out), "--python", base, "--module-type", "lmod"))
    assert f"{out}: backend: unknown backend 'pixi'" in line
    assert not (run.root / "envs" / "x").exists()
