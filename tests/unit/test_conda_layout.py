"""The conda backend's parts that need no conda: the build-in-place layout of the store (a link
to a build that never moves), conda spec checks, the MPI rule's helpers, and the modulefile of a
conda env (hostile values from activate.d scripts arrive as data in Lua and Tcl)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_record import make_record
from test_templates import HOSTILE_PREFIX, rendered, run_lua, tcl_calls

from bridge.build.backends.conda_engine import CondaPackage
from bridge.build.backends.condaenv import check_conda_spec, conda_mpi, label_channel, spec_name
from bridge.config import Settings, load_settings
from bridge.errors import ConfigError, EnvExists, UsageError
from bridge.store.record import RECORD_FILE, CondaRecord, write_record
from bridge.store.root import Store


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(Settings(root=tmp_path / "root", cache_dir=tmp_path / "cache"))


def built(store: Store, name: str) -> Path:
    """A finished build of ``name`` (its record inside), as a create leaves it before going live."""
    build = store.new_build(name)
    write_record(make_record(build, name=name), build)
    return build


# ---- the layout ----------------------------------------------------------------------------
def test_a_build_goes_live_by_a_link_and_never_moves(store):
    build = built(store, "c")
    assert build.parent == store.settings.envs_dir / ".builds" and build.name.startswith("c@")
    assert store.names() == []                      # not visible before its link
    assert store.commit_link("c", build) is None
    assert os.readlink(store.env_path("c")) == str(build)
    assert store.names() == ["c"] and store.load("c").prefix == str(build)


def test_replacing_a_build_returns_the_old_one_to_discard_after_the_module(store):
    old = built(store, "c")
    store.commit_link("c", old)
    new = built(store, "c")
    assert old.is_dir()                             # a new build never touches the live one
    replaced = store.commit_link("c", new)
    assert replaced == old and old.is_dir()         # still there until the new module is written
    store.discard(replaced)
    assert not old.exists() and os.readlink(store.env_path("c")) == str(new)


def test_a_killed_creates_build_is_removed_by_the_next_create_and_the_live_one_kept(store):
    live = built(store, "c")
    store.commit_link("c", live)
    leftover = built(store, "c")                    # never linked: as a create killed before going live
    other = built(store, "cc")                      # another env's build: not this name's
    assert store.names() == ["c"]
    store.new_build("c")
    assert not leftover.exists() and live.is_dir() and other.is_dir()


def test_a_conda_env_replaces_a_venv_and_a_venv_a_conda_env(store):
    staging = store.new_staging("v")
    write_record(make_record(store.env_path("v"), name="v"), staging)
    store.commit("v", staging)
    build = built(store, "v")
    replaced = store.commit_link("v", build)        # exchanged: the venv directory comes back to discard
    assert replaced is not None and (replaced / RECORD_FILE).is_file() and not replaced.is_symlink()
    store.discard(replaced)
    assert store.env_path("v").is_symlink()
    staging = store.new_staging("v")
    write_record(make_record(store.env_path("v"), name="v"), staging)
    replaced = store.commit("v", staging)           # the link comes back: discarding it deletes its build
    assert replaced is not None and replaced.is_symlink()
    store.discard(replaced)
    assert not build.exists() and store.env_path("v").is_dir() and not store.env_path("v").is_symlink()


def test_remove_deletes_link_and_build_but_only_unregisters_an_env_built_elsewhere(store, tmp_path):
    build = built(store, "c")
    store.commit_link("c", build)
    store.remove_env_dir("c")
    assert not store.env_path("c").is_symlink() and not build.exists()
    elsewhere = tmp_path / "eb" / "install"
    elsewhere.mkdir(parents=True)
    write_record(make_record(elsewhere, name="e"), elsewhere)
    store.register("e", elsewhere)
    store.remove_env_dir("e")
    assert elsewhere.is_dir() and not store.env_path("e").is_symlink()


def test_register_never_replaces_a_conda_env_envmod_built(store, tmp_path):
    build = built(store, "c")
    store.commit_link("c", build)
    elsewhere = tmp_path / "eb"
    elsewhere.mkdir()
    write_record(make_record(elsewhere, name="c"), elsewhere)
    with pytest.raises(EnvExists, match="an environment of that name exists"):
        store.register("c", elsewhere)
    assert os.readlink(store.env_path("c")) == str(build)


# ---- specs, channels and the MPI rule ------------------------------------------------------------
@pytest.mark.parametrize("spec, name", [("python=3.11", "python"), ("numpy >=1.26", "numpy"),
                                        ("file:///c/label/mpi-external::openmpi=4.1.4", "openmpi"),
                                        ("conda-forge::NumPy", "numpy")])
def test_spec_name(spec, name):
    assert spec_name(spec) == name


@pytest.mark.parametrize("spec", ["--offline", "-c", "", "   ", "numpy\n--offline", "a\tb"])
def test_a_spec_that_conda_could_read_as_an_option_or_that_is_not_one_line_is_refused(spec):
    with pytest.raises(UsageError, match="is not a package spec"):
        check_conda_spec(spec)


def test_the_label_channel_is_the_listed_one_else_the_first_channels_label():
    assert label_channel(["file:///c", "file:///c/label/mpi-external/"]) == "file:///c/label/mpi-external/"
    assert label_channel(["https://example.invalid/site", "file:///other"]) == \
        "https://example.invalid/site/label/mpi-external"


def test_a_conda_mpi_is_one_not_from_the_placeholder_label():
    placeholder = CondaPackage("openmpi", "4.1.4", "h0c3b9f2_100", "file:///c/label/mpi-external")
    real = CondaPackage("openmpi", "5.0.3", "h_conda_mpi_0", "file:///c")
    other = CondaPackage("mpi", "1.0", "openmpi", "file:///c")
    assert conda_mpi([placeholder, other]) is None
    assert conda_mpi([placeholder, other, real]) == real


def test_config_names_the_conda_and_its_channels(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("conda: ~/bin/conda\nconda_channels: [file:///site/channel, conda-forge]\nbackend: conda\n")
    settings = load_settings({"HOME": str(tmp_path), "ENVMOD_CONFIG": str(config),
                              "ENVMOD_SITE_CONFIG": "", "XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert settings.conda == tmp_path / "bin" / "conda" and settings.backend == "conda"
    assert settings.conda_channels == ("file:///site/channel", "conda-forge")
    config.write_text("conda_channels: file:///site/channel\n")
    with pytest.raises(ConfigError, match="'conda_channels' must be a list"):
        load_settings({"HOME": str(tmp_path), "ENVMOD_CONFIG": str(config), "ENVMOD_SITE_CONFIG": ""})


# ---- the modulefile ------------------------------------------------------------------------------
HOSTILE_VALUE = 'a"b\'c]]d}{e$f`g\\h\n[exit 1]'


@pytest.fixture
def conda_record():
    return make_record(HOSTILE_PREFIX, backend="conda",
                       conda=CondaRecord(activate_env={"ACTIVATED": HOSTILE_VALUE, "GDAL_DATA": "/x/share/gdal"}))


def expected_setenv(record) -> list[tuple]:
    return [("CONDA_PREFIX", record.prefix), ("CONDA_DEFAULT_ENV", record.prefix), ("ACTIVATED", HOSTILE_VALUE),
            ("GDAL_DATA", "/x/share/gdal"), ("PYTHONNOUSERSITE", "1"), ("ENVMOD_ENV", "myenv"),
            ("ENVMOD_RECORD", record.prefix + "/envmod.yaml")]


def test_lua_module_of_a_conda_env_sets_its_variables_as_data(tmp_path, conda_record):
    calls = run_lua(rendered(tmp_path, conda_record, "lmod"), tmp_path)
    assert [c[1:] for c in calls if c[0] == "setenv"] == expected_setenv(conda_record)
    assert [c[1:] for c in calls if c[0] == "prepend_path"] == [("PATH", conda_record.prefix + "/bin")]
    assert not any("VIRTUAL_ENV" in c or "LD_LIBRARY_PATH" in c for c in calls)


def test_tcl_module_of_a_conda_env_sets_its_variables_as_data(tmp_path, conda_record):
    calls, _ = tcl_calls(rendered(tmp_path, conda_record, "tcl"), tmp_path)
    assert [c[1:] for c in calls if c[0] == "setenv"] == expected_setenv(conda_record)
    assert [c[1:] for c in calls if c[0] == "prepend-path"] == [("PATH", conda_record.prefix + "/bin")]
    assert not any("VIRTUAL_ENV" in c or "LD_LIBRARY_PATH" in c for c in calls)


def test_rebuild_refuses_a_conda_env_in_one_line_changing_nothing(store):
    from bridge.errors import PlanError
    from bridge.rebuild import RebuildSession

    build = store.new_build("c")
    write_record(make_record(build, name="c", backend="conda", conda=CondaRecord()), build)
    store.commit_link("c", build)
    with pytest.raises(PlanError, match="c is a conda env, which rebuild cannot copy and move"):
        RebuildSession("c", store.settings).run()
    assert os.readlink(store.env_path("c")) == str(build) and (build / RECORD_FILE).is_file()


def test_check_reports_a_conda_env_whose_build_is_gone_as_unchecked(store):
    import shutil

    from bridge.check import check_stored

    build = store.new_build("c")
    write_record(make_record(build, name="c", backend="conda", conda=CondaRecord()), build)
    store.commit_link("c", build)
    shutil.rmtree(build)
    report = check_stored(store, "c", None)
    assert report.exit_code == 2 and report.unchecked == f"environment 'c' links to {build}, which does not exist"


def test_cli_remove_of_a_conda_env_removes_it_even_when_its_build_is_gone(store, tmp_path):
    import shutil
    import subprocess
    import sys

    for gone in (False, True):
        build = built(store, "c")
        store.commit_link("c", build)
        module = store.settings.modules_dir / "c" / "py3.11.lua"
        module.parent.mkdir(parents=True, exist_ok=True)
        module.write_text("-- c\n")
        if gone:
            shutil.rmtree(build)
        proc = subprocess.run([sys.executable, "-m", "bridge", "--root", str(store.settings.root), "remove", "c",
                               "--yes"], capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)})
        assert proc.returncode == 0, proc.stderr
        assert "unregistered" not in proc.stdout and "removed" in proc.stdout
        assert not store.env_path("c").is_symlink() and not build.exists() and not module.exists()
