"""bridge.store.root: layout, the per-env lock across real processes, and atomic put-in-place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_record import make_record

from bridge.config import Settings
from bridge.errors import ConfigError, EnvBusy, EnvNotFound, InvalidName, RecordError
from bridge.store.record import RECORD_FILE, write_record
from bridge.store.root import Store


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(Settings(root=tmp_path / "root", cache_dir=tmp_path / "cache"))


HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from bridge.config import Settings
    from bridge.store.root import Store
    store = Store(Settings(root=Path(sys.argv[1]), cache_dir=Path(sys.argv[1]) / "cache"))
    with store.shared_lock(sys.argv[2]) if sys.argv[3:] == ["shared"] else store.lock(sys.argv[2], "creating it"):
        print("locked", flush=True)
        sys.stdin.read()          # hold the lock until the test closes our stdin
    print("released", flush=True)
""")


class Holder:
    """Another process holding an env's lock (``shared``: as a member of a shared env's group
    registering a module for it), until released or killed."""

    def __init__(self, store: Store, name: str, shared: bool = False) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.settings.root), name,
                                      *(["shared"] if shared else [])],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line == "locked\n", f"holder did not take the lock: {line!r}"

    def release(self) -> None:
        self.proc.stdin.close()
        assert self.proc.stdout.readline() == "released\n"
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc.stdin.close()
        self.proc.stdout.close()


@pytest.fixture
def holder(store):
    held = []

    def hold(name: str, shared: bool = False) -> Holder:
        h = Holder(store, name, shared)
        held.append(h)
        return h

    yield hold
    for h in held:
        if h.proc.poll() is None:
            h.kill()


# ---- the lock -----------------------------------------------------------------------------

def test_lock_held_by_another_process_is_busy_at_once_with_its_text(store, holder):
    h = holder("myenv")
    started = time.monotonic()
    with pytest.raises(EnvBusy) as info:
        with store.lock("myenv"):
            pass
    assert time.monotonic() - started < 2
    assert f"envmod (pid {h.proc.pid}) is creating it" in info.value.message
    assert info.value.exit_code == 5


def test_lock_is_free_again_after_the_holder_releases(store, holder):
    holder("myenv").release()
    with store.lock("myenv", "checking"):
        pass


def test_lock_is_free_again_after_the_holder_is_killed(store, holder):
    holder("myenv").kill()
    with store.lock("myenv"):
        pass


def test_lock_of_another_env_is_not_blocked(store, holder):
    holder("myenv")
    with store.lock("myenv.b"):
        pass


# The actions the callers pass (session.py: "creating it"; cli.py: "removing it",
# "rewriting its module"), and the sentence a blocked user must read.
@pytest.mark.parametrize("action,sentence", [("creating it", "is creating it"),
                                             ("removing it", "is removing it"),
                                             ("rewriting its module", "is rewriting its module")])
def test_lock_text_names_the_holder_and_reads_as_a_sentence(store, action, sentence):
    with store.lock("myenv", action):
        text = (store.settings.state_dir / "locks/myenv.lock").read_text()
    assert text == f"envmod (pid {os.getpid()}) {sentence}"


# ---- the lock held shared (members of a group-shared env's group; store/shared.py) -----------

def test_a_writer_is_busy_while_a_member_holds_the_lock_shared_and_is_told_so(store, holder):
    """The lock file's text names its last writer, who is done: the busy message names a member."""
    with store.lock("myenv", "creating it"):
        pass
    holder("myenv", shared=True)
    with pytest.raises(EnvBusy) as info:
        with store.lock("myenv", "removing it"):
            pass
    assert "a member of its group is registering their own module or kernel for it" in info.value.one_line()
    assert "creating it" not in info.value.one_line() and info.value.exit_code == 5


def test_a_member_is_busy_while_a_writer_holds_the_lock_and_is_told_by_whom(store, holder):
    with store.lock("myenv"):
        pass
    h = holder("myenv")
    with pytest.raises(EnvBusy) as info:
        with store.shared_lock("myenv"):
            pass
    assert f"environment 'myenv' is busy: envmod (pid {h.proc.pid}) is creating it" in info.value.one_line()
    h.release()
    with store.shared_lock("myenv"):
        pass


def test_members_hold_the_lock_shared_together(store, holder):
    with store.lock("myenv"):
        pass
    holder("myenv", shared=True)
    with store.shared_lock("myenv"):
        pass


def test_the_shared_lock_of_an_env_without_a_lock_file_is_refused_and_makes_none(store):
    """A member may not make it (it would be theirs: the maintainer could not lock it)."""
    with pytest.raises(ConfigError) as info:
        with store.shared_lock("myenv"):
            pass
    assert f"its lock file {store.lock_path('myenv')} is missing" in info.value.one_line()
    assert f"--root {store.settings.root} module myenv" in info.value.one_line()
    assert not store.lock_path("myenv").exists()


def test_lock_refuses_an_invalid_name(store):
    with pytest.raises(InvalidName):
        with store.lock("../x"):
            pass


# ---- commit -------------------------------------------------------------------------------

def staged(store: Store, name: str, content: str) -> Path:
    staging = store.new_staging(name)
    (staging / "marker").write_text(content)
    return staging


def test_staging_is_on_the_same_file_system_as_envs(store):
    staging = store.new_staging("myenv")
    assert staging.stat().st_dev == store.settings.envs_dir.stat().st_dev
    assert staging.name.startswith("myenv@")


UMASKED_STAGING = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from bridge.config import Settings
    from bridge.store.root import Store
    os.umask(int(sys.argv[2], 8))
    store = Store(Settings(root=Path(sys.argv[1]), cache_dir=Path(sys.argv[1]) / "cache"))
    store.commit("myenv", store.new_staging("myenv"))
    print(oct(os.stat(store.env_path("myenv")).st_mode & 0o7777))
""")


@pytest.mark.parametrize("umask,mode", [(0o022, 0o755), (0o002, 0o775), (0o077, 0o700)],
                         ids=["umask022", "umask002", "umask077"])
def test_an_env_put_in_place_has_the_mode_the_umask_gives_a_new_directory(tmp_path, umask, mode):
    """Not mkdtemp's 0700: under umask 022 colleagues who may read the module may run the env
    (each umask in its own process: the test process's is left alone)."""
    proc = subprocess.run([sys.executable, "-c", UMASKED_STAGING, str(tmp_path / "root"), oct(umask)],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == oct(mode)


def test_commit_into_an_empty_place_moves_staging_there(store):
    staging = staged(store, "myenv", "new")
    assert store.commit("myenv", staging) is None
    assert (store.env_path("myenv") / "marker").read_text() == "new"
    assert not staging.exists()


def test_commit_over_an_existing_env_returns_the_old_contents(store):
    store.commit("myenv", staged(store, "myenv", "old"))
    replaced = store.commit("myenv", staged(store, "myenv", "new"))
    assert (store.env_path("myenv") / "marker").read_text() == "new"
    assert replaced is not None and (replaced / "marker").read_text() == "old"


def test_discarding_the_replaced_env_removes_it(store):
    store.commit("myenv", staged(store, "myenv", "old"))
    replaced = store.commit("myenv", staged(store, "myenv", "new"))
    store.discard(replaced)
    assert not replaced.exists()
    store.discard(None)


def test_commit_keeps_the_env_path_a_directory_throughout(store):
    # After an exchange there is never a moment without an env: both paths are directories.
    store.commit("myenv", staged(store, "myenv", "old"))
    replaced = store.commit("myenv", staged(store, "myenv", "new"))
    assert store.env_path("myenv").is_dir() and replaced.is_dir()


# ---- stale leftovers ----------------------------------------------------------------------

def test_clean_stale_removes_this_envs_staging_and_trash(store):
    leftovers = [store.new_staging("a"), store._trash_slot("a")]
    leftovers[1].mkdir()
    store.clean_stale("a")
    assert not any(p.exists() for p in leftovers)


def test_clean_stale_leaves_envs_whose_names_extend_this_one(store):
    others = [store.new_staging("a.b"), store.new_staging("ab"), store.new_staging("a-1"), store._trash_slot("a.b")]
    others[-1].mkdir()
    store.clean_stale("a")
    assert all(p.exists() for p in others)


def test_new_staging_cleans_only_its_own_leftovers(store):
    mine, theirs = store.new_staging("a"), store.new_staging("a.b")
    fresh = store.new_staging("a")
    assert not mine.exists() and theirs.exists() and fresh.exists()


def test_clean_stale_on_a_fresh_root_does_nothing(store):
    store.clean_stale("a")
    assert not store.settings.state_dir.exists()


# ---- removal, reading ---------------------------------------------------------------------

def test_remove_env_dir_removes_it_and_leaves_no_trash(store):
    store.commit("myenv", staged(store, "myenv", "x"))
    store.remove_env_dir("myenv")
    assert not store.env_path("myenv").exists()
    assert list((store.settings.state_dir / "trash").iterdir()) == []


def test_remove_env_dir_of_a_missing_env_does_nothing(store):
    store.remove_env_dir("nope")


def test_names_lists_only_envs_with_a_record(store):
    for name in ("b", "a"):
        store.env_path(name).mkdir(parents=True)
        write_record(make_record(store.env_path(name)))
    store.env_path("no-record").mkdir()
    (store.settings.envs_dir / ".hidden").mkdir()
    (store.settings.envs_dir / ".hidden" / RECORD_FILE).write_text("")
    assert store.names() == ["a", "b"]


def test_names_of_a_fresh_root_is_empty(store):
    assert store.names() == []


def test_load_of_a_missing_env_is_env_not_found_with_hint(store):
    with pytest.raises(EnvNotFound) as info:
        store.load("nope")
    assert "envmod list" in info.value.hint


def test_records_reports_a_broken_record_as_its_error(store):
    store.env_path("good").mkdir(parents=True)
    write_record(make_record(store.env_path("good")))
    store.env_path("bad").mkdir()
    (store.env_path("bad") / RECORD_FILE).write_text("envmod_record: 99\n")
    results = dict(store.records())
    assert results["good"].name == "myenv"
    assert isinstance(results["bad"], RecordError)


def test_paths_follow_the_layout(store):
    root = store.settings.root
    assert store.env_path("x") == root / "envs/x"
    assert store.record_path("x") == root / "envs/x" / RECORD_FILE
    assert store.log_dir("x") == root / "logs/x"


def test_env_path_refuses_an_invalid_name(store):
    with pytest.raises(InvalidName):
        store.env_path("a/b")


def test_root_with_a_colon_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="':'"):
        Store(Settings(root=tmp_path / "a:b", cache_dir=tmp_path))


def test_taking_the_lock_removes_the_temporary_names_a_killed_writer_of_that_env_left(store):
    """What a create SIGKILLed inside its last steps leaves, named as the store names it: the
    link not yet renamed over ``envs/a`` (and the build it names), the old env an exchange moved
    aside, a modulefile's temp file. The next one to hold the lock removes them; another env's
    and the live modulefile stay."""
    envs, modules = store.settings.envs_dir, store.settings.modules_dir
    build = store.new_build("a")
    (envs / ".a.link-4242").symlink_to(build)
    aside = envs / ".a.link-4343"
    aside.mkdir()
    (aside / "envmod.yaml").write_text("the old env\n")
    (modules / "a").mkdir(parents=True)
    (modules / "a" / ".tmp-k1ll3d").write_text("half a modulefile")
    (modules / "a" / "py3.11.lua").write_text("-- the live modulefile\n")
    other_build = store.new_build("ab")
    (envs / ".ab.link-4242").symlink_to(other_build)
    (modules / "ab").mkdir()
    (modules / "ab" / ".tmp-k1ll3d").write_text("another env's")
    with store.lock("a"):
        pass
    assert not (envs / ".a.link-4242").is_symlink() and not aside.exists()
    assert [p.name for p in (modules / "a").iterdir()] == ["py3.11.lua"]
    assert (envs / ".ab.link-4242").is_symlink() and other_build.exists()
    assert (modules / "ab" / ".tmp-k1ll3d").exists()
    store.clean_stale("a")          # the next create's sweep: the build no link names
    assert not build.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_taking_the_lock_leaves_alone_a_link_another_user_planted_at_a_leftovers_name(store):
    """A group-shared root's envs/ is its group's to write in: a member's link at
    ``.NAME.link-PID`` naming the live build must not make the maintainer delete it."""
    live = store.new_build("a")
    (live / "envmod.yaml").write_text("the live env\n")
    store.commit_link("a", live)
    planted = store.settings.envs_dir / ".a.link-4242"
    planted.symlink_to(live)
    os.lchown(planted, 65534, 65534)
    with store.lock("a"):
        pass
    assert planted.is_symlink() and (live / "envmod.yaml").read_text() == "the live env\n"


# ---- a lock file someone else put there ----------------------------------------------------

def planted(store: Store, name: str) -> Path:
    path = store.lock_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_left_alone(store, tmp_path):
    """In a group-shared root's group-writable locks/, a member could plant a link where the
    maintainer's next create of that name opens its lock: followed, it would truncate the
    maintainer's own file."""
    victim = tmp_path / "maintainers-file"
    victim.write_text("precious\n")
    planted(store, "a").symlink_to(victim)
    with pytest.raises(ConfigError) as refused:
        with store.lock("a"):
            pass
    assert "symbolic link" in refused.value.message and str(store.lock_path("a")) in refused.value.message
    assert victim.read_text() == "precious\n"


def test_a_lock_file_that_is_not_a_regular_file_is_refused(store):
    os.mkfifo(planted(store, "a"))
    with pytest.raises(ConfigError, match="not a regular file"):
        with store.lock("a"):
            pass


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_lock_file_of_another_user_is_refused_and_left_as_it_is(store):
    path = planted(store, "a")
    path.write_text("theirs\n")
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="it belongs to"):
        with store.lock("a"):
            pass
    assert path.read_text() == "theirs\n" and path.stat().st_uid == 65534
