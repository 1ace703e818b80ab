"""Each front end speaks its own language (issue #9): what envmod writes for an env made through
Spack (modulefile help and header, export headers) names ``spack envmod``, the command such a user
has; an env of the envmod program (or a record older than this field) names ``envmod``."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from tests.unit.test_record import make_record

from bridge import frontends
from bridge.emit.export import read_export, render_export
from bridge.emit.modulefile import render_modulefile
from bridge.errors import UsageError
from bridge.store.record import EnvRecord, read_record, write_record


def spack_made(prefix) -> EnvRecord:
    record = make_record(prefix)
    record.created = dataclasses.replace(record.created, front_end="spack")
    return record


@pytest.fixture
def running_envmod():
    yield
    frontends.set_running("envmod")


def test_the_command_of_each_front_end():
    assert frontends.user_command("spack") == "spack envmod"
    assert frontends.user_command("envmod") == "envmod"
    assert frontends.user_command("easybuild") == "envmod"
    assert frontends.user_command(None) == "envmod"


def test_a_record_keeps_its_front_end_and_an_older_record_means_envmod(tmp_path):
    write_record(spack_made(tmp_path))
    assert read_record(tmp_path / "envmod.yaml").created.front_end == "spack"
    assert frontends.command_for(read_record(tmp_path / "envmod.yaml")) == "spack envmod"
    old = make_record(tmp_path)
    assert old.created.front_end is None and frontends.command_for(old) == "envmod"


@pytest.mark.parametrize("module_type", ["lmod", "tcl"])
def test_modulefile_help_and_header_name_spack_envmod_for_a_spack_env(tmp_path, module_type):
    text = render_modulefile(spack_made(tmp_path), module_type)
    assert "'spack envmod show myenv' describes it; 'spack envmod check myenv' verifies it" in text
    assert "'spack envmod module myenv" in text
    assert "'envmod show" not in text.replace("'spack envmod show", "")


@pytest.mark.parametrize("module_type", ["lmod", "tcl"])
def test_modulefile_of_an_envmod_env_names_envmod(tmp_path, module_type):
    text = render_modulefile(make_record(tmp_path), module_type)
    assert "'envmod show myenv' describes it" in text and "spack envmod" not in text
    assert "'envmod module myenv" in text


def test_export_headers_name_the_command_of_the_env(tmp_path):
    spack_env = spack_made(tmp_path)
    yaml_text = render_export(spack_env, "yaml")
    assert yaml_text.splitlines()[0].startswith("# envmod export of myenv: spack envmod create NEWNAME --from THIS_FILE")
    assert yaml.safe_load(yaml_text)["name"] == "myenv"
    assert "#   spack envmod create NEWNAME -r THIS_FILE" in render_export(spack_env, "requirements").splitlines()
    plain = make_record(tmp_path)
    assert render_export(plain, "yaml").startswith("# envmod export of myenv: envmod create NEWNAME --from")
    assert "#   envmod create NEWNAME -r THIS_FILE" in render_export(plain, "requirements").splitlines()


def test_hints_without_an_env_name_the_running_front_end(tmp_path, running_envmod):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\n")
    with pytest.raises(UsageError) as err:
        read_export(bad)
    assert "make one with 'envmod export NAME -o FILE'" in err.value.one_line()
    frontends.set_running("spack")
    with pytest.raises(UsageError) as err:
        read_export(bad)
    assert "make one with 'spack envmod export NAME -o FILE'" in err.value.one_line()
    with pytest.raises(ValueError):
        frontends.set_running("conda")
