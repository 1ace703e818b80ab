"""bridge.store.shared: the modes of a group-shared env, the record's ``shared`` field, the
checks of a shared root and of members' registry entries (with the user running the tests; the
tests with real users and groups are tests/e2e/test_shared_envs.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from tests.unit.test_cli import one_error_line
from tests.unit.test_record import make_record

from bridge.errors import ConfigError
from bridge.fsutil import effective_user
from bridge.store.record import SharedRecord, read_record, write_record
from bridge.store.shared import (
    check_shared_root,
    member_entries,
    read_member_entry,
    share_tree,
    shared_umask,
)


@pytest.mark.parametrize(("umask", "expected"), [(0o077, 0o027), (0o022, 0o022), (0o002, 0o022), (0o000, 0o022),
                                                 (0o027, 0o027), (0o007, 0o027)])
def test_the_group_always_reads_and_never_writes_others_follow_the_umask_and_never_write(umask, expected):
    assert shared_umask(umask) == expected


def test_share_tree_gives_the_group_read_and_takes_every_write_but_the_owners(tmp_path):
    top = tmp_path / "env"
    (top / "bin").mkdir(parents=True)
    launcher, data = top / "bin/pip", top / "data.txt"
    launcher.write_text("#!/bin/sh\n")
    data.write_text("x")
    os.chmod(launcher, 0o777)
    os.chmod(data, 0o600)
    (top / "link").symlink_to("data.txt")
    old = os.umask(0o077)
    try:
        share_tree(top, os.getegid())
    finally:
        os.umask(old)
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o750       # others: nothing, as umask 077 says
    assert stat.S_IMODE(data.stat().st_mode) == 0o640
    for directory in (top, top / "bin"):
        assert stat.S_IMODE(directory.stat().st_mode) & 0o2050 == 0o2050


def test_a_record_keeps_its_sharing(tmp_path):
    record = make_record(tmp_path, shared=SharedRecord(group="abc", maintainer="alice"))
    write_record(record, tmp_path)
    again = read_record(tmp_path / "envmod.yaml")
    assert again.shared == SharedRecord(group="abc", maintainer="alice")
    assert read_record(write_record(make_record(tmp_path), tmp_path)).shared is None


@pytest.mark.parametrize(("mode", "why"), [(0o777, "world-writable"), (0o775, "group-writable but not sticky")])
def test_a_shared_root_whose_directories_let_others_change_envs_is_refused(tmp_path, mode, why):
    root = tmp_path / "shared"
    (root / "envs").mkdir(parents=True)
    os.chmod(root / "envs", mode)
    with pytest.raises(ConfigError, match=why):
        check_shared_root(root)
    os.chmod(root / "envs", 0o3775)
    check_shared_root(root)


def test_a_member_entry_someone_else_could_have_written_is_not_counted(tmp_path):
    entry_dir = tmp_path / ".envmod/members" / effective_user()
    entry_dir.mkdir(parents=True)
    entry = entry_dir / "team.yaml"
    module = tmp_path / "mine/modules/team/py3.11.lua"
    module.parent.mkdir(parents=True)
    module.write_text("")
    entry.write_text(f"user: somebody-else\nmodules: [{module}]\n")
    os.chmod(entry, 0o644)
    found = read_member_entry(entry)
    assert found is not None and found.user == effective_user()       # the owner, not what the file says
    assert [e.user for e in member_entries(tmp_path, "team")] == [effective_user()]
    os.chmod(entry, 0o664)
    assert read_member_entry(entry) is None
    os.chmod(entry, 0o644)
    module.unlink()                                 # a module proved gone no longer points at the env
    assert member_entries(tmp_path, "team") == []


def test_group_without_shared_is_a_usage_error(run):
    proc = run("create", "e", "--group", "abc")
    assert proc.returncode == 2
    assert "--group needs --shared DIR" in one_error_line(proc)


def test_module_shared_of_an_env_that_is_not_shared_is_one_line(run, tmp_path):
    other = tmp_path / "other"
    record = make_record(other / "envs/plain", name="plain")
    (other / "envs/plain").mkdir(parents=True)
    write_record(record)
    proc = run("module", "plain", "--shared", str(other))
    assert proc.returncode == 2
    assert "is not a shared environment" in one_error_line(proc)
    assert not Path(tmp_path / "root/envs/plain").exists()


def test_a_members_remove_takes_only_kernels_envmod_made_for_that_shared_root(tmp_path):
    """remove_member_kernels: a registered directory that is no envmod kernel of an env of this
    shared root (a kernel the user replaced with their own, one of another env) stays."""
    import json

    from bridge.emit.member import remove_member_kernels
    from bridge.store.shared import add_member_entry, set_member_kernels

    shared = tmp_path / "shared"
    (shared / ".envmod/members").mkdir(parents=True)
    kernels = {}
    for name, prefix in (("ours", shared / "envs/.builds/team@1"), ("other", tmp_path / "elsewhere/envs/team"),
                         ("hand", None)):
        kernels[name] = tmp_path / "k" / name
        kernels[name].mkdir(parents=True)
        spec = {"argv": ["x"]} if prefix is None else {"metadata": {"envmod": {"prefix": str(prefix)}}}
        (kernels[name] / "kernel.json").write_text(json.dumps(spec))
    add_member_entry(shared, "team", tmp_path / "mine/modules/team/py3.11.lua", tmp_path / "mine")
    set_member_kernels(shared, "team", [str(k) for k in kernels.values()])
    assert remove_member_kernels(shared, "team") == [str(kernels["ours"])]
    assert not kernels["ours"].exists() and kernels["other"].is_dir() and kernels["hand"].is_dir()


def test_a_kernel_without_a_registered_module_is_one_line_and_nothing_is_written(tmp_path):
    from bridge.store.shared import member_entry_path, set_member_kernels

    shared = tmp_path / "shared"
    (shared / ".envmod/members").mkdir(parents=True)
    with pytest.raises(ConfigError, match="you have no module registered for 'team'"):
        set_member_kernels(shared, "team", [str(tmp_path / "k")])
    assert not member_entry_path(shared, "team", effective_user()).exists()


def test_a_members_registration_reads_the_record_again_under_the_lock(tmp_path, monkeypatch):
    """A member's ``module --shared`` reads the shared env's record, then takes its lock (shared)
    and reads it again: a maintainer's remove that landed in between is seen (the env is gone,
    one error) and nothing is registered, written or linked. FAKE: that remove is done by
    wrapping ``Store.shared_lock`` (a real process cannot be made to land in that instant);
    the locks themselves are tested across real processes and users elsewhere."""
    import shutil

    from bridge.config import Settings
    from bridge.emit.member import write_member_module
    from bridge.errors import EnvNotFound
    from bridge.store.root import Store
    from bridge.store.shared import member_entry_path

    shared = Store(Settings(root=tmp_path / "shared", cache_dir=tmp_path / "cache"))
    (shared.settings.state_dir / "members").mkdir(parents=True)
    prefix = shared.env_path("team")
    prefix.mkdir(parents=True)
    write_record(make_record(prefix, name="team", shared=SharedRecord(group="g", maintainer="alice")))
    with shared.lock("team", "creating it"):        # as its create made the lock file
        pass
    own = Settings(root=tmp_path / "own", cache_dir=tmp_path / "cache")
    real_shared_lock = Store.shared_lock

    def removed_just_before(store, name):
        shutil.rmtree(store.env_path(name))
        return real_shared_lock(store, name)

    monkeypatch.setattr(Store, "shared_lock", removed_just_before)
    with pytest.raises(EnvNotFound, match="no environment named 'team'"):
        write_member_module(own, shared.settings.root, "team", "lmod")
    assert not member_entry_path(shared.settings.root, "team", effective_user()).exists()
    assert not os.path.lexists(own.root / "envs/team") and not (own.root / "modules/team").exists()

    monkeypatch.setattr(Store, "shared_lock", real_shared_lock)     # and with the env there, it registers
    prefix.mkdir()
    write_record(make_record(prefix, name="team", shared=SharedRecord(group="g", maintainer="alice")))
    written = write_member_module(own, shared.settings.root, "team", "lmod")
    assert written.is_file() and os.readlink(own.root / "envs/team") == str(prefix)
    assert read_member_entry(member_entry_path(shared.settings.root, "team", effective_user())).modules == [str(written)]
