"""bridge.store.listing: ``envmod list`` from a cache of rows keyed by each record file's identity
(issue #14: a root of 1,000 envs lists in <= 0.3 s; parsing every record took 2.3 s of CPU)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.unit.test_record import make_record

from bridge.config import Settings
from bridge.store.listing import CACHE_FILE, list_rows
from bridge.store.record import write_record
from bridge.store.root import Store


def store_with(tmp_path: Path, names: list[str]) -> Store:
    store = Store(Settings(root=tmp_path / "root", cache_dir=tmp_path / "cache"))
    for name in names:
        prefix = store.env_path(name)
        prefix.mkdir(parents=True)
        write_record(make_record(prefix, name=name, description=f"env {name}"))
    return store


def test_rows_come_from_the_cache_until_a_record_is_replaced(tmp_path, monkeypatch):
    store = store_with(tmp_path, ["a", "b", "c"])
    first = list_rows(store)
    assert [r["name"] for r in first] == ["a", "b", "c"] and first[1]["description"] == "env b"
    assert (store.settings.state_dir / CACHE_FILE).is_file()
    loads = []
    real_load = Store.load
    monkeypatch.setattr(Store, "load", lambda self, name: loads.append(name) or real_load(self, name))
    assert list_rows(store) == first and loads == []            # every row from the cache
    write_record(make_record(store.env_path("b"), name="b", description="changed"))   # atomic: a new file
    rows = list_rows(store)
    assert loads == ["b"] and rows[1]["description"] == "changed"


def test_an_unreadable_record_is_listed_with_its_error_and_never_cached(tmp_path):
    store = store_with(tmp_path, ["a", "b"])
    list_rows(store)
    store.record_path("b").write_text("envmod_record: 1\nname: [unclosed\n")
    rows = list_rows(store)
    assert "error" in rows[1] and "not valid YAML" in rows[1]["error"]
    cache = json.loads((store.settings.state_dir / CACHE_FILE).read_text())
    assert sorted(cache["rows"]) == ["a"]


def test_a_removed_env_leaves_the_list_and_a_damaged_cache_is_ignored(tmp_path):
    store = store_with(tmp_path, ["a", "b"])
    list_rows(store)
    store.remove_env_dir("a")
    assert [r["name"] for r in list_rows(store)] == ["b"]
    (store.settings.state_dir / CACHE_FILE).write_text("{not json")
    assert [r["name"] for r in list_rows(store)] == ["b"]


def test_a_root_the_user_cannot_write_is_listed_without_a_cache(tmp_path):
    store = store_with(tmp_path, ["a"])
    state = store.settings.state_dir
    os.chmod(store.settings.root, 0o555)
    try:
        if os.access(store.settings.root, os.W_OK):       # root ignores modes: nothing to prove here
            return
        assert [r["name"] for r in list_rows(store)] == ["a"]
        assert not (state / CACHE_FILE).exists()
    finally:
        os.chmod(store.settings.root, 0o755)


def test_a_members_link_to_a_shared_env_lists_their_own_kernels(tmp_path, run):
    """A member's link (``envmod module NAME --shared DIR``) lists the kernels they registered for
    the shared env, as their own env lists its record's; never the maintainer's. By list and
    list --json, cached rows or not."""
    from bridge.store.record import SharedRecord
    from bridge.store.shared import add_member_entry, set_member_kernels

    shared = Store(Settings(root=tmp_path / "shared", cache_dir=tmp_path / "cache"))
    (shared.settings.state_dir / "members").mkdir(parents=True)
    prefix = shared.env_path("team")
    prefix.mkdir(parents=True)
    write_record(make_record(prefix, name="team", shared=SharedRecord(group="g", maintainer="alice"),
                             kernels=[{"name": "alices-team", "dir": "/home/alice/k/alices-team"}]))
    own = Store(Settings(root=run.root, cache_dir=tmp_path / "cache"))
    mine = own.env_path("mine")
    mine.mkdir(parents=True)
    write_record(make_record(mine, name="mine", kernels=[{"name": "envmod-mine", "dir": "/k/envmod-mine"}]))
    own.env_path("team").symlink_to(prefix)
    add_member_entry(shared.settings.root, "team", run.root / "modules/team/py3.11.lua", run.root)
    assert {r["name"]: r["kernels"] for r in list_rows(own)} == {"mine": ["envmod-mine"], "team": []}

    set_member_kernels(shared.settings.root, "team", [str(tmp_path / "home/.local/share/jupyter/kernels/envmod-team")])
    for _ in range(2):                  # the second time from the cache
        assert {r["name"]: r["kernels"] for r in list_rows(own)} == {"mine": ["envmod-mine"], "team": ["envmod-team"]}
    listed = run("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {r["name"]: r["kernels"] for r in json.loads(listed.stdout)} == {"mine": ["envmod-mine"],
                                                                            "team": ["envmod-team"]}
    table = run("list")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[-1] == "KERNELS" and [r.split()[-1] for r in rows] == ["envmod-mine", "envmod-team"]
