"""The backend choice (--backend, 'backend:' in the config) and the uv backend: a real ``uv venv``
over the base interpreter, made in staging and renamed to its final place as the store does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_cli import one_error_line
from test_config import env_for, home, site_config, write_user_config  # noqa: F401  (fixtures)
from test_pyinfo import base_python

from bridge.build.backends import BACKENDS, get_backend
from bridge.build.backends.uv import UvBackend, find_uv, uv_spec
from bridge.config import load_settings
from bridge.discover.pyinfo import interrogate
from bridge.errors import ConfigError, UsageError

PROBE = "import json, sys; print(json.dumps({'prefix': sys.prefix, 'path': sys.path}))"


# ---- the choice ------------------------------------------------------------------------------
def test_the_backends_are_venv_uv_conda_and_rattler():
    assert set(BACKENDS) == {"venv", "uv", "conda", "rattler"}
    assert isinstance(get_backend("uv"), UvBackend)


def test_unknown_backend_is_refused_listing_the_known():
    with pytest.raises(UsageError, match="unknown backend 'pipenv'; available: conda, rattler, uv, venv"):
        get_backend("pipenv")


def test_create_help_lists_the_backends(run):  # noqa: F811
    proc = run("create", "--help")
    assert proc.returncode == 0
    assert "--backend {venv,uv,conda,rattler}" in proc.stdout


@pytest.mark.parametrize("name, says", [("bogus", "unknown backend 'bogus'; available: conda, rattler, uv, venv")])
def test_cli_refuses_a_backend_in_one_line_creating_nothing(run, name, says):  # noqa: F811
    proc = run("create", "e", "--backend", name, "--python", base_python(), "--module-type", "lmod")
    assert proc.returncode == 2
    assert says in one_error_line(proc)
    assert not (run.root / "envs" / "e").exists()


def test_config_sets_the_default_backend_and_uv(home, site_config):  # noqa: F811
    write_user_config(home, "backend: uv\nuv: ~/bin/uv\n")
    settings = load_settings(env_for(home, site_config))
    assert settings.backend == "uv"
    assert settings.uv == home / "bin" / "uv"


def test_user_config_backend_overrides_the_site(home, site_config):  # noqa: F811
    site_config.write_text("backend: uv\n")
    write_user_config(home, "backend: venv\n")
    assert load_settings(env_for(home, site_config)).backend == "venv"


@pytest.mark.parametrize("value, says", [("pipenv", "unknown backend 'pipenv'"),
                                         ("[uv]", "unknown backend ['uv']")])
def test_config_refuses_a_bad_backend_naming_the_file(home, site_config, value, says):  # noqa: F811
    path = write_user_config(home, f"backend: {value}\n")
    with pytest.raises(UsageError, match=f"{path}: 'backend': {says}".replace("[", r"\[").replace("]", r"\]")):
        load_settings(env_for(home, site_config))


# ---- finding uv --------------------------------------------------------------------------------
def test_configured_uv_that_is_missing_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"'uv:' in the config names .*/no-uv, which is not an executable"):
        find_uv(tmp_path / "no-uv")


def test_no_uv_anywhere_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))     # nothing beside it
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        find_uv(None)
    assert "pip install 'envmod[uv]'" in info.value.one_line()


def test_uv_beside_envmods_python_comes_first(tmp_path, monkeypatch):
    beside = tmp_path / "uv"
    beside.write_text("#!/bin/sh\n")
    beside.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert find_uv(None) == str(beside)


def test_cli_with_uv_missing_fails_in_one_line_before_anything_is_built(run, tmp_path):  # noqa: F811
    config = tmp_path / "config.yaml"
    config.write_text(f"backend: uv\nuv: {tmp_path / 'no-uv'}\n")
    proc = run("create", "e", "--python", base_python(), "--module-type", "lmod",
               extra_env={"ENVMOD_CONFIG": str(config)})
    assert proc.returncode == 2
    assert "the uv backend needs uv" in one_error_line(proc)
    assert not (run.root / "envs").exists() or not any((run.root / "envs").iterdir())


# ---- what uv is asked to install: exactly pip's plan ------------------------------------------
def test_uv_installs_the_very_file_pip_chose():
    item = {"metadata": {"name": "cma"}, "download_info": {"url": "https://files.example/cma-4.5.0-py3-none-any.whl",
                                                           "archive_info": {}}}
    assert uv_spec(item, "cma") == ["cma @ https://files.example/cma-4.5.0-py3-none-any.whl"]


def test_uv_installs_pips_editable_and_vcs_choices():
    editable = {"download_info": {"url": "file:///src/pkg", "dir_info": {"editable": True}}}
    vcs = {"download_info": {"url": "https://git.example/pkg", "vcs_info": {"vcs": "git", "commit_id": "abc"}}}
    assert uv_spec(editable, "pkg") == ["--editable", "file:///src/pkg"]
    assert uv_spec(vcs, "pkg") == ["pkg @ git+https://git.example/pkg@abc"]


# ---- a real uv venv, made in staging and moved ---------------------------------------------------
@pytest.fixture(scope="module")
def base_info():
    return interrogate(base_python())


@pytest.fixture
def uv_env(tmp_path, base_info):
    staging, final = tmp_path / ".envmod" / "staging-myenv", tmp_path / "envs" / "myenv"
    staging.mkdir(parents=True)
    final.parent.mkdir()
    UvBackend().create(base_info, staging, final, "myenv")
    os.rename(staging, final)
    return staging, final


def test_nothing_in_the_env_names_the_staging_path(uv_env):
    staging, final = uv_env
    named = [p for p in final.rglob("*") if p.is_file() and not p.is_symlink()
             and os.fsencode(str(staging)) in p.read_bytes()]
    assert named == []


def test_moved_env_runs_with_its_final_prefix_and_sees_the_central_packages(uv_env, base_info):
    _, final = uv_env
    proc = subprocess.run([str(final / "bin" / "python"), "-c", PROBE], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}, timeout=60)
    facts = json.loads(proc.stdout)
    assert facts["prefix"] == str(final)
    assert base_info.purelib in facts["path"]


def test_moved_envs_activate_names_the_final_path(uv_env):
    _, final = uv_env
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-c", f'. "{final}/bin/activate"; echo "$VIRTUAL_ENV"'],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == str(final)
