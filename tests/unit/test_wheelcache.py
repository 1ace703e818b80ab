"""bridge.wheelcache: entries made like normal files (umask, setgid kept), shared between real users.

Every store and lookup runs `CLIENT` in its own Python process with the umask it is given, so the
test process's umask is never changed; as root, the second user is a real one (``useradd``, the
pattern of tests/easybuild/easybuild_site.py, the same user ``envmodeb``) running `CLIENT` with
``runuser``. The wheel holds a real extension module (gcc) linking a library of a central module,
so a lookup really rescans the entry and compares the library's hash; without gcc it holds only
Python files.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from test_evidence import GCC, IS_LINUX_X86_64, PYTHON, ext, lib

REPO = Path(__file__).resolve().parents[2]
SECOND_USER = os.environ.get("ENVMOD_EB_USER", "envmodeb")
EXT = "envmodtest_ext/_core.cpython-311-x86_64-linux-gnu.so"

# One process of one user doing stores and lookups; prints what each returned and the warnings.
CLIENT = r"""
import json, os, sys
from pathlib import Path
from bridge.rules import SourceBuild
from bridge.stack import CentralModule
from bridge.wheelcache import CacheRequest, WheelCache

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
    """A directory every user can read (pytest's tmp_path of root is not), with a central
    module's library and wheels built in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
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

    def client(self, cache: Path, *ops, umask: int = 0o022, user: str | None = None,
               collect: bool = True) -> tuple[dict, str]:
        """Run CLIENT (as ``user`` with runuser, else as this user); its results and stderr."""
        args = {"cache": str(cache), "mpi": str(self.mpi), "python": PYTHON, "umask": umask,
                "collect": collect, "ops": [list(op) for op in ops]}
        argv = [sys.executable, "-c", CLIENT, json.dumps(args)]
        if user:
            argv = [runuser(), "-u", user, "--", *argv]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "PYTHONPATH": str(REPO / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env,
                              stdin=subprocess.DEVNULL, cwd="/")
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout), proc.stderr


def runuser() -> str:
    return shutil.which("runuser", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or "runuser"


@pytest.fixture
def work():
    path = Path(tempfile.mkdtemp(prefix="envmod-wheelcache-"))
    path.chmod(0o755)
    try:
        yield Work(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def second_user() -> str:
    """A real unprivileged user (made with useradd if missing), as tests/easybuild does."""
    if os.geteuid() != 0:
        pytest.skip("a second user needs root (useradd, runuser); run as root to test a cache shared by two users")
    if not shutil.which("runuser", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
        pytest.skip("runuser (util-linux) is not installed")
    try:
        pwd.getpwnam(SECOND_USER)
    except KeyError:
        proc = subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", SECOND_USER],
                              capture_output=True, text=True)
        try:
            pwd.getpwnam(SECOND_USER)        # made now, or meanwhile by another test run
        except KeyError:
            pytest.skip(f"cannot create the test user {SECOND_USER}: {proc.stderr.strip()}")
    return SECOND_USER


def below(root: Path) -> list[Path]:
    """Everything under root (not root itself)."""
    return sorted(Path(d) / n for d, dirs, files in os.walk(root) for n in dirs + files)


def modes(root: Path) -> dict[str, set[str]]:
    """The permission bits (with setuid/setgid/sticky) of the dirs and of the files under root."""
    out: dict[str, set[str]] = {"dirs": set(), "files": set()}
    for p in below(root):
        st = p.lstat()
        out["dirs" if stat.S_ISDIR(st.st_mode) else "files"].add(oct(stat.S_IMODE(st.st_mode)))
    return out


# ---- modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=["umask022", "umask002", "umask077"])
def test_stored_entry_follows_the_umask_like_normal_files(work, umask):
    cache = work.path / "cache"
    cache.mkdir()
    wheel = work.wheel("1.0", mode=0o600)       # pip's wheel may be private: the entry's copy is not
    out, err = work.client(cache, ("store", "1.0", str(wheel), "20260101T000000Z"), ("lookup", "1.0"), umask=umask)
    stored, (hit, why) = out["results"]
    assert stored and hit == stored and "same central libraries" in why, (out, err)
    assert out["warnings"] == [] and err == ""
    entry = Path(stored).parent
    assert (entry / "entry.json").is_file() and (entry / "unpacked").is_dir()
    assert not [p for p in below(cache) if p.name.startswith(".new-")]
    assert modes(cache) == {"dirs": {oct(0o777 & ~umask)}, "files": {oct(0o666 & ~umask)}}
    if GCC and IS_LINUX_X86_64:
        meta = json.loads((entry / "entry.json").read_text())
        assert [link[:3] for link in meta["links"]] == [[EXT, "libfakempi.so.40", "openmpi/4.1.4"]]


def test_entries_under_a_setgid_cache_root_keep_its_group_and_setgid_bit(work):
    cache = work.path / "cache"
    cache.mkdir()
    # As root, a group that is not ours shows the group comes from the directory, not the process.
    group = 100 if os.geteuid() == 0 else os.getegid()
    os.chown(cache, -1, group)
    cache.chmod(0o2775)
    out, err = work.client(cache, ("store", "1.0", str(work.wheel("1.0")), "20260101T000000Z"), umask=0o002)
    assert out["results"][0], err
    assert modes(cache) == {"dirs": {oct(0o2775)}, "files": {oct(0o664)}}
    assert {p.lstat().st_gid for p in below(cache)} == {group}


# ---- robustness -----------------------------------------------------------------------------


def test_damaged_entries_are_a_miss_not_an_error(work):
    cache = work.path / "cache"
    out, _ = work.client(cache, ("store", "1.0", str(work.wheel("1.0")), "20260101T000000Z"))
    entry = Path(out["results"][0]).parent
    for text in ("[1, 2]", '{"wheel": "x.whl"}', "{not json"):
        (entry / "entry.json").write_text(text)
        out, err = work.client(cache, ("lookup", "1.0"))
        assert out["results"] == [[None, "cached builds link other central libraries than the modules provide now"]]
        assert out["warnings"] == [] and err == ""


def test_an_unwritable_cache_warns_once_in_one_line_and_the_store_goes_on(work, request):
    """Two stores into a cache this user may not write: both return None, one warning line."""
    cache = work.path / "cache"
    cache.mkdir()
    if os.geteuid() == 0:
        user = request.getfixturevalue("second_user")       # root may write anywhere: be another user
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


# ---- a second, real user --------------------------------------------------------------------


def test_second_user_reuses_an_entry_stored_under_umask_022(work, second_user):
    """The default umask: entries are world-readable, so another user's lookup hits instead of
    compiling again (entries made 0700 by mkdtemp were unreadable to them)."""
    cache = work.path / "cache"
    cache.mkdir()
    out, _ = work.client(cache, ("store", "1.0", str(work.wheel("1.0")), "20260101T000000Z"), umask=0o022)
    stored = out["results"][0]
    out, err = work.client(cache, ("lookup", "1.0"), user=second_user)
    assert out["results"][0][0] == stored, (out, err)
    assert out["warnings"] == []


def test_second_user_reads_and_adds_entries_in_a_group_shared_setgid_cache(work, second_user):
    """``wheel_cache:`` shared by a group: root dir group-writable and setgid, everyone at umask
    002. The second user reuses the first's entry, adds one in the first's key directory and one
    for another version, and the first user reuses those."""
    user = pwd.getpwnam(second_user)
    cache = work.path / "cache"
    cache.mkdir()
    os.chown(cache, -1, user.pw_gid)             # the group: the second user's; root is not in it
    cache.chmod(0o2775)
    out, _ = work.client(cache, ("store", "1.0", str(work.wheel("1.0")), "20260101T000000Z"), umask=0o002)
    first = out["results"][0]
    out, err = work.client(cache, ("lookup", "1.0"),
                           ("store", "1.0", str(work.wheel("1.0")), "20260202T000000Z"),
                           ("store", "2.0", str(work.wheel("2.0")), "20260202T000000Z"),
                           user=second_user, umask=0o002)
    (hit, _), same_key, other_version = out["results"]
    assert hit == first and same_key and other_version, (out, err)
    assert out["warnings"] == [] and err == ""
    assert Path(same_key).parent.parent == Path(first).parent.parent       # in the first user's key dir
    for stored in (same_key, other_version):
        entry = Path(stored).parent
        assert entry.stat().st_uid == user.pw_uid
        assert modes(entry) == {"dirs": {oct(0o2775)}, "files": {oct(0o664)}}
    assert modes(cache) == {"dirs": {oct(0o2775)}, "files": {oct(0o664)}}
    assert {p.lstat().st_gid for p in below(cache)} == {user.pw_gid}
    out, _ = work.client(cache, ("lookup", "1.0"), ("lookup", "2.0"), umask=0o002)
    assert [r[0] for r in out["results"]] == [same_key, other_version]    # the newest build first


def test_second_user_warns_once_about_an_entry_it_cannot_read_and_compiles(work, second_user):
    """An entry left private (0700, as older envmod made them): a miss and one warning line
    naming it, not a crash and not silence."""
    cache = work.path / "cache"
    cache.mkdir()
    out, _ = work.client(cache, ("store", "1.0", str(work.wheel("1.0")), "20260101T000000Z"))
    entry = Path(out["results"][0]).parent
    entry.chmod(0o700)
    out, err = work.client(cache, ("lookup", "1.0"), ("lookup", "1.0"), user=second_user, collect=False)
    assert [r[0] for r in out["results"]] == [None, None]
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"envmod: warning: cannot read the wheel cache entry {entry} (Permission denied")
