"""bridge.build.wheelcache: entries made like normal files (umask, setgid kept), shared between real
users, and never changed or replaced by anyone but their writer.

Every store and lookup runs `CLIENT` in its own Python process with the umask it is given, so the
test process's umask is never changed. The users are real: two made by the test (``groupadd``,
``useradd``, see tests/users.py), members of one group, running `CLIENT` with ``runuser`` from a
copy of envmod they can reach. The wheel holds a real extension module (gcc) linking a library of
a central module, so a lookup really rescans the entry and compares the library's hash; without
gcc it holds only Python files.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import zipfile
from pathlib import Path

import pytest
from test_evidence import GCC, IS_LINUX_X86_64, PYTHON, ext, lib
from tests.users import AsUser, User, base_python, install_for_users

EXT = "envmodtest_ext/_core.cpython-311-x86_64-linux-gnu.so"

# One process of one user doing stores and lookups; prints what each returned and the warnings.
CLIENT = r"""
import json, os, sys
from pathlib import Path
from bridge.build.rules import SourceBuild
from bridge.discover.stack import CentralModule
from bridge.build.wheelcache import CacheRequest, WheelCache

args = json.loads(sys.argv[1])
os.umask(args["umask"])
mpi = CentralModule("openmpi/4.1.4", "/modules/openmpi/4.1.4", "mpi", args["mpi"],
                    {"LD_LIBRARY_PATH": (args["mpi"] + "/lib",)})

def request(version):
    return CacheRequest("envmodtest-ext", version, "cpython-311-x86_64-linux-gnu", "linux-x86_64",
                        SourceBuild("envmodtest-ext", (mpi,), {"MPICC": "mpicc"}))

warnings = [] if args["collect"] else None
cache = WheelCache(Path(args["cache"]), [mpi], args["python"],
                   warn=warnings.append if warnings is not None else None)
out = []
for op in args["ops"]:
    if op[0] == "store":
        stored = cache.store(request(op[1]), Path(op[2]), op[3])
        out.append(str(stored) if stored else None)
    else:
        wheel, why = cache.lookup(request(op[1]))
        out.append([str(wheel) if wheel else None, why])
print(json.dumps({"results": out, "warnings": warnings}))
"""



class Work:
    """A directory every user can read (pytest's tmp_path of root is not), with envmod copied in
    it, a central module's library and wheels built in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runner = AsUser(install_for_users(path / "envmod"))
        self.mpi = path / "software/openmpi/4.1.4"
        if GCC and IS_LINUX_X86_64:
            lib(self.mpi / "lib", "libfakempi.so.40", symbol="f_mpi")
        else:
            (self.mpi / "lib").mkdir(parents=True)

    def wheel(self, version: str, mode: int = 0o644) -> Path:
        """A wheel as pip would build it, with an extension linking the central libfakempi."""
        src = self.path / f"src-{version}"
        if GCC and IS_LINUX_X86_64:
            ext(src, EXT, [(self.mpi / "lib", "libfakempi.so.40")])
        path = self.path / "wheels" / f"envmodtest_ext-{version}-cp311-cp311-linux_x86_64.whl"
        path.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("envmodtest_ext/__init__.py", "")
            zf.writestr(f"envmodtest_ext-{version}.dist-info/METADATA",
                        f"Metadata-Version: 2.1\nName: envmodtest-ext\nVersion: {version}\n")
            if (src / EXT).exists():
                zf.write(src / EXT, EXT)
        path.chmod(mode)
        return path

    def client(self, cache: Path, *ops, umask: int = 0o022, user: User | None = None,
               collect: bool = True) -> tuple[dict, str]:
        """Run CLIENT (as ``user`` with runuser, else as this user); its results and stderr."""
        args = {"cache": str(cache), "mpi": str(self.mpi), "python": PYTHON, "umask": umask,
                "collect": collect, "ops": [list(op) for op in ops]}
        argv = [base_python(), "-c", CLIENT, json.dumps(args)]
        if user:
            proc = self.runner.run(user, argv, umask, timeout=120)
        else:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                                  cwd="/", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                                                "PYTHONPATH": str(self.runner.lib), "PYTHONDONTWRITEBYTECODE": "1"})
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout), proc.stderr


@pytest.fixture
def work():
    path = Path(tempfile.mkdtemp(prefix="envmod-wheelcache-"))
    path.chmod(0o755)
    try:
        yield Work(path)
    finally:
        for d, dirs, files in os.walk(path):      # sealed entries: writable again to delete them
            os.chmod(d, 0o755)
        shutil.rmtree(path, ignore_errors=True)


def group_cache(work: Work, users, mode: int = 0o3775) -> Path:
    """A cache shared by the group as a site sets one up: the admin's (root's), the group's,
    group-writable, setgid and sticky."""
    cache = work.path / "cache"
    cache.mkdir()
    os.chown(cache, 0, users.gid)
    cache.chmod(mode)
    return cache


def users_cache(work: Work, user: User) -> Path:
    """A cache of ``user``'s own that others may read."""
    cache = work.path / "cache"
    cache.mkdir()
    os.chown(cache, user.uid, user.gid)
    return cache


def below(root: Path) -> list[Path]:
    """Everything under root (not root itself)."""
    return sorted(Path(d) / n for d, dirs, files in os.walk(root) for n in dirs + files)


def modes(root: Path) -> dict[str, set[str]]:
    """The permission bits (with setuid/setgid/sticky) under root: of the writer's directories
    (writer, package, version, key), of the entries' directories, and of the files."""
    out: dict[str, set[str]] = {"writer": set(), "entry": set(), "files": set()}
    for p in below(root):
        st = p.lstat()
        kind = ("files" if not stat.S_ISDIR(st.st_mode) else
                "writer" if len(p.relative_to(root).parts) <= 4 else "entry")
        out[kind].add(oct(stat.S_IMODE(st.st_mode)))
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=["umask022", "umask002", "umask077"])
def test_stored_entry_follows_the_umask_and_is_sealed(work, umask):
    """Readable as the umask allows; writable by its writer's directories only, and the entry
    itself by no one (sealed); the wheel's sha256 recorded."""
    cache = work.path / "cache"
    cache.mkdir()
    wheel = work.wheel("1.0", mode=0o600)       # pip's wheel may be private: the entry's copy is not
    out, err = work.client(cache, ("store", "1.0", str(wheel), "20260101T000000Z"), ("lookup", "1.0"), umask=umask)
    stored, (hit, why) = out["results"]
    assert stored and hit == stored and "same central libraries" in why, (out, err)
    assert out["warnings"] == [] and err == ""
    entry = Path(stored).parent
    assert entry.relative_to(cache).parts[0] == pwd.getpwuid(os.geteuid()).pw_name   # the writer's part
    assert (entry / "entry.json").is_file() and (entry / "unpacked").is_dir()
    assert not [p for p in below(cache) if p.name.startswith(".new-")]
    assert modes(cache) == {"writer": {oct(0o755 & ~umask)}, "entry": {oct(0o555 & ~umask)},
                            "files": {oct(0o444 & ~umask)}}
    meta = json.loads((entry / "entry.json").read_text())
    assert meta["sha256"] == sha256(wheel)
    if GCC and IS_LINUX_X86_64:
        assert [link[:3] for link in meta["links"]] == [[EXT, "libfakempi.so.40", "openmpi/4.1.4"]]


def test_entries_under_a_setgid_cache_root_keep_its_group_and_setgid_bit(work):
    cache = work.path / "cache"
    cache.mkdir()
    # As root, a group that is not ours shows the group comes from the directory, not the process.
    group = 100 if os.geteuid() == 0 else os.getegid()
    os.chown(cache, -1, group)
    cache.chmod(0o3775)
    out, err = work.client(cache, ("store", "1.0", str(work.wheel("1.0")), "20260101T000000Z"), umask=0o002)
    assert out["results"][0], err
    assert modes(cache) == {"writer": {oct(0o2755)}, "entry": {oct(0o2555)}, "files": {oct(0o444)}}
    assert {p.lstat().st_gid for p in below(cache)} == {group}


# ---- robustness -----------------------------------------------------------------------------


def test_damaged_entries_are_a_miss_not_an_error(work):
    cache = work.path / "cache"
    out, _ = work.client(cache, ("store", "1.0", str(work.wheel("1.0")), "20260101T000000Z"))
    entry = Path(out["results"][0]).parent
    meta = json.loads((entry / "entry.json").read_text())
    del meta["sha256"]                          # as envmod wrote them before it recorded one
    entry.chmod(0o755)
    (entry / "entry.json").chmod(0o644)
    for text in ("[1, 2]", '{"wheel": "x.whl"}', "{not json", json.dumps(meta)):
        (entry / "entry.json").write_text(text)
        out, err = work.client(cache, ("lookup", "1.0"))
        assert out["results"] == [[None, "cached builds link other central libraries than the modules provide now"]]
        assert out["warnings"] == [] and err == ""


def test_an_unwritable_cache_warns_once_in_one_line_and_the_store_goes_on(work, request):
    """Two stores into a cache this user may not write: both return None, one warning line."""
    cache = work.path / "cache"
    cache.mkdir()
    if os.geteuid() == 0:
        user = request.getfixturevalue("users").bob       # root may write anywhere: be another user
    else:
        user = None
        cache.chmod(0o555)
    ops = [("store", "1.0", str(work.wheel("1.0")), "20260101T000000Z"),
           ("store", "2.0", str(work.wheel("2.0")), "20260101T000001Z"), ("lookup", "1.0")]
    out, err = work.client(cache, *ops, user=user, collect=False)
    assert out["results"] == [None, None, [None, "no cached build for these settings"]]
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"envmod: warning: cannot add to the wheel cache {cache} (Permission denied")
    assert lines[0].endswith("the build is not cached")
    assert below(cache) == []


# ---- two real users -------------------------------------------------------------------------


def test_a_colleague_reuses_an_entry_stored_under_umask_022(work, users):
    """The default umask: entries are world-readable, so another user's lookup hits instead of
    compiling again (entries made 0700 by mkdtemp were unreadable to them)."""
    cache = users_cache(work, users.alice)
    out, _ = work.client(cache, ("store", "1.0", str(work.wheel("1.0")), "20260101T000000Z"),
                         user=users.alice, umask=0o022)
    stored = out["results"][0]
    out, err = work.client(cache, ("lookup", "1.0"), user=users.bob)
    assert out["results"][0][0] == stored, (out, err)
    assert out["warnings"] == []


def test_members_read_and_add_entries_in_a_group_shared_cache(work, users):
    """``wheel_cache:`` shared by a group: root dir group-writable, setgid and sticky, everyone at
    umask 002. bob reuses alice's entry and adds his own (same key, another version) in his part
    of the cache, and alice reuses those, the newest build first."""
    cache = group_cache(work, users)
    out, _ = work.client(cache, ("store", "1.0", str(work.wheel("1.0")), "20260101T000000Z"),
                         user=users.alice, umask=0o002)
    first = out["results"][0]
    out, err = work.client(cache, ("lookup", "1.0"),
                           ("store", "1.0", str(work.wheel("1.0")), "20260202T000000Z"),
                           ("store", "2.0", str(work.wheel("2.0")), "20260202T000000Z"),
                           user=users.bob, umask=0o002)
    (hit, _), same_key, other_version = out["results"]
    assert hit == first and same_key and other_version, (out, err)
    assert out["warnings"] == [] and err == ""
    for stored in (same_key, other_version):
        assert Path(stored).relative_to(cache).parts[0] == users.bob.name
        assert {p.lstat().st_uid for p in below(cache / users.bob.name)} == {users.bob.uid}
    assert modes(cache) == {"writer": {oct(0o2755)}, "entry": {oct(0o2555)}, "files": {oct(0o444)}}
    assert {p.lstat().st_gid for p in below(cache)} == {users.gid}
    out, _ = work.client(cache, ("lookup", "1.0"), ("lookup", "2.0"), user=users.alice, umask=0o002)
    assert [r[0] for r in out["results"]] == [same_key, other_version]
    assert out["warnings"] == []


def test_a_colleague_warns_once_about_an_entry_it_cannot_read_and_compiles(work, users):
    """An entry left private (0700, as older envmod made them): a miss and one warning line
    naming it, not a crash and not silence."""
    cache = users_cache(work, users.alice)
    out, _ = work.client(cache, ("store", "1.0", str(work.wheel("1.0")), "20260101T000000Z"), user=users.alice)
    entry = Path(out["results"][0]).parent
    entry.chmod(0o700)
    out, err = work.client(cache, ("lookup", "1.0"), ("lookup", "1.0"), user=users.bob, collect=False)
    assert [r[0] for r in out["results"]] == [None, None]
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"envmod: warning: cannot read the wheel cache entry {entry} (Permission denied")


# What a member tries on another member's entry; each must be refused (an errno name), never "done".
ATTACK = r"""
import json, os, sys
from pathlib import Path
wheel, cache = Path(sys.argv[1]), Path(sys.argv[2])
entry, key = wheel.parent, wheel.parent.parent
top = cache / wheel.relative_to(cache).parts[0]
def attempt(action):
    try:
        action()
        return "done"
    except OSError as exc:
        return os.strerror(exc.errno)
def overwrite():
    with open(wheel, "r+b") as fh:
        fh.write(b"PK-bad")
def add_beside():
    (entry / "evil.whl").write_bytes(b"x")
def replace_wheel():
    (key / "evil.whl").write_bytes(b"x")
    os.replace(key / "evil.whl", wheel)
print(json.dumps({
    "overwrite the wheel": attempt(overwrite),
    "chmod the wheel": attempt(lambda: os.chmod(wheel, 0o666)),
    "add a file to the entry": attempt(add_beside),
    "rename a wheel over it": attempt(replace_wheel),
    "remove entry.json": attempt(lambda: os.unlink(entry / "entry.json")),
    "move the entry aside": attempt(lambda: os.rename(entry, entry.with_name(".aside-entry"))),
    "move its key directory aside": attempt(lambda: os.rename(key, key.with_name(".aside-key"))),
    "move the writer's directory aside": attempt(lambda: os.rename(top, top.with_name(".aside-top"))),
}))
"""


def test_a_member_can_neither_change_nor_move_aside_another_members_entry(work, users):
    """bob, in the group that shares the cache, tries to change alice's cached wheel in place,
    replace it, or move her entry (or a directory above it) aside: each is refused, and alice's
    next lookup still gets her own wheel, byte for byte."""
    cache = group_cache(work, users)
    wheel = work.wheel("1.0")
    out, _ = work.client(cache, ("store", "1.0", str(wheel), "20260101T000000Z"), user=users.alice, umask=0o002)
    stored = out["results"][0]
    proc = work.runner.run(users.bob, [base_python(), "-c", ATTACK, stored, str(cache)], umask=0o002)
    assert proc.returncode == 0, proc.stderr
    tried = json.loads(proc.stdout)
    assert {what: result for what, result in tried.items() if result == "done"} == {}, tried
    out, _ = work.client(cache, ("lookup", "1.0"), user=users.alice, umask=0o002)
    assert out["results"][0][0] == stored and sha256(Path(stored)) == sha256(wheel)


def test_a_wheel_changed_after_it_was_stored_is_a_miss_with_a_warning(work, users):
    """Changed in place by someone who could (its writer after a chmod, or root): its bytes no
    longer hash to what the writer recorded, so no member's lookup returns it; each says so."""
    cache = group_cache(work, users)
    out, _ = work.client(cache, ("store", "1.0", str(work.wheel("1.0")), "20260101T000000Z"),
                         user=users.alice, umask=0o002)
    wheel = Path(out["results"][0])
    with open(wheel, "r+b") as fh:               # root: the file mode does not stop it
        fh.seek(0, os.SEEK_END)
        fh.write(b"changed")
    for user in (users.alice, users.bob):
        out, err = work.client(cache, ("lookup", "1.0"), ("lookup", "1.0"), user=user, collect=False)
        assert [r[0] for r in out["results"]] == [None, None]
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(f"envmod: warning: the wheel cache entry {wheel.parent} was changed after "
                                   "it was stored"), lines[0]


def test_an_entry_others_could_change_is_not_used(work, users):
    """A wheel left group-writable (as older envmod left them under umask 002) could have been
    changed by any member: not used, with a warning."""
    cache = group_cache(work, users)
    out, _ = work.client(cache, ("store", "1.0", str(work.wheel("1.0")), "20260101T000000Z"),
                         user=users.alice, umask=0o002)
    wheel = Path(out["results"][0])
    wheel.chmod(0o664)
    out, _ = work.client(cache, ("lookup", "1.0"), user=users.bob, umask=0o002)
    assert out["results"][0][0] is None
    assert out["warnings"] == [f"the wheel cache entry {wheel.parent} could have been changed by another user "
                               "than its writer (it or a directory above it is theirs or writable by others), "
                               "so it is not used"]


@pytest.mark.parametrize("made", ["by envmod", "before, not sticky"])
def test_a_users_own_cache_under_umask_002_is_used(work, users, made):
    """A cache of one's own, group-writable under umask 002: made sticky by envmod (the one it
    makes, or one of the user's older envmod left without), so its entries are reused."""
    cache = work.path / "mine/cache"
    (work.path / "mine").mkdir()
    os.chown(work.path / "mine", users.alice.uid, users.alice.gid)
    if made != "by envmod":
        users_cache(work, users.alice).rename(cache)
        cache.chmod(0o775)
    out, _ = work.client(cache, ("store", "1.0", str(work.wheel("1.0")), "20260101T000000Z"), ("lookup", "1.0"),
                         user=users.alice, umask=0o002)
    stored, (hit, _) = out["results"]
    assert stored and hit == stored and out["warnings"] == [], out
    assert stat.S_IMODE(cache.stat().st_mode) == 0o1775


def test_a_shared_cache_root_that_is_not_sticky_is_not_used(work, users):
    """Group-writable but not sticky: any member could move a writer's directory aside and put
    their own under its name. Not used, with a warning saying how to fix it."""
    cache = group_cache(work, users, mode=0o2775)
    out, _ = work.client(cache, ("store", "1.0", str(work.wheel("1.0")), "20260101T000000Z"),
                         user=users.alice, umask=0o002)
    assert out["results"][0]
    out, _ = work.client(cache, ("lookup", "1.0"), user=users.bob, umask=0o002)
    assert out["results"][0] == [None, "no cached build for these settings"]
    assert out["warnings"] == [f"the wheel cache {cache} is writable by others but not sticky, so they could "
                               f"replace each other's builds; it is not used (chmod +t {cache})"]
