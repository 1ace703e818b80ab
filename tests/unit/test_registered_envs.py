"""Envs built elsewhere (EasyBuild's UserEnv, in its install dir) and registered by a symlink
under <root>/envs: list/show read them, `envmod remove` only unregisters them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import load_settings
from bridge.errors import ConfigError, EnvExists, RecordError
from bridge.store.record import EnvRecord, ModuleRecord, Provenance, PythonRecord, write_record
from bridge.store.root import Store


def eb_install(tmp_path: Path, version: str = "1.0", module_file: Path | None = None) -> Path:
    """What UserEnv leaves in an EasyBuild install dir: the env with its record."""
    installdir = tmp_path / "eb/software/MyEnv" / version
    installdir.mkdir(parents=True)
    files = {"lmod": str(module_file)} if module_file else {}
    write_record(EnvRecord(name="MyEnv-1.0", backend="venv", prefix=str(installdir),
                           python=PythonRecord(version="3.11.2", executable="/p/bin/python3"),
                           module=ModuleRecord(name="MyEnv/1.0", type="lmod", files=files),
                           created=Provenance(at="t", by="u", host="h", envmod_version="0")), installdir)
    return installdir


def is_registered(store: Store, name: str) -> bool:
    """Whether ``name`` is an env built elsewhere and linked under the root (the library only
    needs ``Store.registered_target``)."""
    return store.env_path(name).is_symlink()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(load_settings({"ENVMOD_ROOT": str(tmp_path / "root"), "HOME": str(tmp_path)}))


def test_registered_env_is_listed_and_read_through_the_link(tmp_path, store):
    installdir = eb_install(tmp_path)
    link = store.register("MyEnv-1.0", installdir)
    assert link == store.env_path("MyEnv-1.0") and link.is_symlink()
    assert store.names() == ["MyEnv-1.0"]
    assert is_registered(store, "MyEnv-1.0") and store.exists("MyEnv-1.0")
    assert store.load("MyEnv-1.0").prefix == str(installdir)


def test_registering_again_moves_the_link_and_leaves_no_temporary(tmp_path, store):
    first, second = eb_install(tmp_path, "1.0"), eb_install(tmp_path, "1.0-rebuilt")
    store.register("MyEnv-1.0", first)
    store.register("MyEnv-1.0", first)                       # the same: nothing to do
    store.register("MyEnv-1.0", second)
    assert Path(os.path.realpath(store.env_path("MyEnv-1.0"))) == second
    assert sorted(p.name for p in store.settings.envs_dir.iterdir()) == ["MyEnv-1.0"]


def test_an_env_envmod_built_is_never_replaced_by_a_registration(tmp_path, store):
    own = store.env_path("MyEnv-1.0")
    own.mkdir(parents=True)
    with pytest.raises(EnvExists, match="an environment of that name exists"):
        store.register("MyEnv-1.0", eb_install(tmp_path))
    assert own.is_dir() and not own.is_symlink() and not is_registered(store, "MyEnv-1.0")


def test_registering_a_dir_without_a_record_or_into_a_read_only_root_says_why(tmp_path, store):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecordError, match="holds no envmod.yaml"):
        store.register("MyEnv-1.0", empty)
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    store.settings.envs_dir.mkdir(parents=True)
    store.settings.envs_dir.chmod(0o555)
    try:
        with pytest.raises(ConfigError) as info:
            store.register("MyEnv-1.0", eb_install(tmp_path))
        assert "cannot register 'MyEnv-1.0'" in info.value.one_line()
    finally:
        store.settings.envs_dir.chmod(0o755)


def test_removing_a_registered_env_unregisters_it_and_keeps_the_install(tmp_path, store):
    installdir = eb_install(tmp_path)
    store.register("MyEnv-1.0", installdir)
    store.remove_env_dir("MyEnv-1.0")
    assert store.names() == [] and not is_registered(store, "MyEnv-1.0")
    assert not os.path.lexists(store.env_path("MyEnv-1.0"))
    assert (installdir / "envmod.yaml").is_file()
    trash = store.settings.state_dir / "trash"
    assert not trash.exists() or list(trash.iterdir()) == []


def test_envmod_remove_of_an_eb_built_env_unregisters_it_and_leaves_eb_s_module(tmp_path, store):
    eb_module = tmp_path / "eb/modules/all/MyEnv/1.0.lua"
    eb_module.parent.mkdir(parents=True)
    eb_module.write_text('family("envmod")\n')
    installdir = eb_install(tmp_path, module_file=eb_module)
    store.register("MyEnv-1.0", installdir)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "ENVMOD_ROOT": str(store.settings.root), "ENVMOD_CONFIG": str(tmp_path / "none.yaml")}
    proc = subprocess.run([sys.executable, "-m", "bridge", "remove", "MyEnv-1.0", "--yes"], capture_output=True,
                          text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("unregistered MyEnv-1.0: its install at ")
    assert not os.path.lexists(store.env_path("MyEnv-1.0"))
    assert (installdir / "envmod.yaml").is_file() and eb_module.is_file()   # EasyBuild's to remove
