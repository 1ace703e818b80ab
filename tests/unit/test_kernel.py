"""``envmod kernel`` without a kernel started (tests/e2e/test_scripts_kernels.py starts real ones):
where kernels go, the record's ``kernels`` field, a name collision refused in one line with
nothing changed, ``remove`` touching only this env's kernelspecs, ``list`` showing them,
``create --kernel`` adding ipykernel once."""

from __future__ import annotations

import json

import pytest
from tests.unit.test_cli import one_error_line
from tests.unit.test_record import make_record

from bridge.emit.kernel import kernel_name, prefix_kernels_dir, remove_kernels, user_kernels_dir, with_ipykernel
from bridge.store.record import EnvRecord, read_record, write_record


@pytest.fixture
def stored(run):
    prefix = run.root / "envs" / "myenv"
    prefix.mkdir(parents=True)
    record = make_record(prefix)
    write_record(record, prefix)
    return record


def foreign_kernel(directory, argv0="/usr/bin/python3"):
    directory.mkdir(parents=True)
    (directory / "kernel.json").write_text(json.dumps({"argv": [argv0, "-m", "ipykernel_launcher", "-f",
                                                                "{connection_file}"], "display_name": "theirs"}))
    return (directory / "kernel.json").read_text()


def test_kernels_go_where_jupyter_looks(tmp_path):
    assert user_kernels_dir({"JUPYTER_DATA_DIR": str(tmp_path / "j")}) == tmp_path / "j/kernels"
    assert user_kernels_dir({"XDG_DATA_HOME": str(tmp_path / "x")}) == tmp_path / "x/jupyter/kernels"
    assert prefix_kernels_dir(tmp_path) == tmp_path / "share/jupyter/kernels"
    assert kernel_name("MyEnv.2") == "envmod-myenv.2"       # Jupyter looks kernels up in lower case


def test_record_keeps_its_kernels(tmp_path):
    record = make_record(tmp_path, kernels=[{"name": "envmod-myenv", "dir": "/k/envmod-myenv", "display_name": "x"}])
    assert EnvRecord.from_dict(record.to_dict()) == record
    write_record(record, tmp_path)
    assert read_record(tmp_path / "envmod.yaml").kernels == record.kernels


@pytest.mark.parametrize("existing", ["envmod-myenv", "EnvMod-MyEnv"])
def test_a_kernel_name_taken_by_another_kernelspec_is_one_line_and_nothing_changes(run, stored, tmp_path, existing):
    kernels = tmp_path / "jup" / "share/jupyter/kernels"
    before = foreign_kernel(kernels / existing)
    record_before = stored.path.read_text()
    proc = run("kernel", "myenv", "--prefix", str(tmp_path / "jup"))
    assert proc.returncode == 4
    line = one_error_line(proc)
    assert f"a Jupyter kernel named '{existing}' exists" in line and "nothing changed" in line
    assert (kernels / existing / "kernel.json").read_text() == before
    assert sorted(p.name for p in kernels.iterdir()) == [existing]
    assert stored.path.read_text() == record_before


def test_kernel_without_a_module_system_is_one_line(run, stored, tmp_path):
    proc = run("kernel", "myenv", "--prefix", str(tmp_path / "jup"))
    assert proc.returncode == 3
    assert "no module system is initialised" in one_error_line(proc)
    assert not (tmp_path / "jup").exists()


def test_remove_deletes_only_this_envs_kernelspecs(run, stored, tmp_path):
    ours, theirs = tmp_path / "k/envmod-myenv", tmp_path / "other/envmod-myenv"
    ours.mkdir(parents=True)
    (ours / "kernel.json").write_text(json.dumps({"argv": [], "metadata": {"envmod": {"prefix": stored.prefix}}}))
    foreign_kernel(theirs)     # recorded, but replaced since by someone else's kernelspec
    stored.kernels = [{"name": "envmod-myenv", "dir": str(ours)}, {"name": "envmod-myenv", "dir": str(theirs)}]
    write_record(stored)
    proc = run("list")
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0].split()[-1] == "KERNELS"
    assert "envmod-myenv,envmod-myenv" in proc.stdout
    assert json.loads(run("list", "--json").stdout)[0]["kernels"] == ["envmod-myenv", "envmod-myenv"]
    proc = run("remove", "myenv", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert not ours.exists() and (theirs / "kernel.json").is_file()


def test_remove_kernels_skips_missing_and_unreadable(tmp_path):
    record = make_record(tmp_path, kernels=[{"name": "a", "dir": str(tmp_path / "gone")}, {"name": "b"}])
    assert remove_kernels(record) == []


def test_list_has_no_kernels_column_without_kernels(run, stored):
    assert "KERNELS" not in run("list").stdout


@pytest.mark.parametrize("packages, expected", [
    (["mpi4py"], ["mpi4py", "ipykernel"]),
    (["IPyKernel>=6"], ["IPyKernel>=6"]),
    (["ipykernel"], ["ipykernel"]),
    ([], ["ipykernel"]),
    (["./local-dir"], ["./local-dir", "ipykernel"]),
])
def test_create_kernel_adds_ipykernel_once(packages, expected):
    assert with_ipykernel(packages) == expected


def test_create_kernel_with_shared_is_refused_before_anything_is_made(run, tmp_path):
    proc = run("create", "team", "--shared", str(tmp_path / "shared"), "--kernel")
    assert proc.returncode == 2
    assert "--kernel with --shared is not supported yet" in one_error_line(proc)
    assert not (tmp_path / "shared").exists() and not run.root.exists()
