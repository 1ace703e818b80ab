"""Group-shared environments (issue #13, section 4), tried with real users (``useradd``) in a real
group (``groupadd``), each command run as one of them (``runuser``) under a real module tool:

alice (the maintainer) creates an env with ``--shared DIR --group G`` under umask 077; bob (a
member) loads it through ``module use DIR/modules`` and through his own module
(``envmod module NAME --shared DIR``), in Lmod and in Environment Modules; bob cannot replace,
rebuild or remove it (one line naming alice); his ``remove`` removes only his module; alice's
``remove`` refuses naming bob until he has, or with ``--force``. bob's own Jupyter kernel for
it (``envmod kernel NAME`` on his link) starts under the real jupyter_client, run as bob, and
goes with his ``remove``; alice's ``remove`` names it. And the bad input: a shared dir
alice cannot write, a group she is not in, a group that does not exist: one line, nothing made.

The env holds one pure package (a wheel written here): nothing compiles, so not marked slow.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from tests.conftest import SYSTEMS, require_site, site_dir, write_wheel
from tests.users import AsUser, base_python, copy_modules_sh, install_for_users

from bridge.store.record import read_record

PKG = "teampkg"


@pytest.fixture(scope="module")
def base(users):
    """A directory every user can read (root's tmp_path is not): envmod, modules.sh and a pure
    wheel in it."""
    base = Path(tempfile.mkdtemp(prefix="envmod-shared-"))
    try:
        base.chmod(0o755)
        runner = AsUser(install_for_users(base / "envmod"))
        modules_sh = copy_modules_sh(base)
        wheel = write_wheel(base / f"{PKG}-1.0-py3-none-any.whl", {
            f"{PKG}/__init__.py": b"WHO = 'team'\n",
            f"{PKG}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {PKG}\nVersion: 1.0\n".encode(),
            f"{PKG}-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        })
        wheel.chmod(0o644)
        yield base, runner, modules_sh, wheel
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _env(user, **more: str) -> dict[str, str]:
    return {"XDG_CACHE_HOME": f"{user.home}/.cache", **more}


def tree(root: Path) -> list[tuple[str, int, int]]:
    """Every path under ``root`` with its mode and owner: what 'nothing changed' compares."""
    out = []
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            st = (Path(d) / n).lstat()
            out.append((str((Path(d) / n).relative_to(root)), st.st_mode, st.st_uid))
    return sorted(out)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _python() -> str:
    site_python = site_dir() / "software/python/3.11.2/bin/python3"
    return str(site_python if site_python.exists() else base_python())


def _alices_shared_root(parent: Path, users) -> Path:
    """Where alice makes a shared root: ``parent/envmod``, ``parent`` a directory of hers."""
    parent.mkdir()
    os.chown(parent, users.alice.uid, users.alice.gid)
    return parent / "envmod"


def _create_shared(runner, users, modules_sh, wheel, shared: Path, name: str, system: str, umask: int = 0o077,
                   more: str = ""):
    module_type = "lmod" if system == "lmod" else "tcl"
    made = runner.bash(users.alice, f"module load python/3.11\n$ENVMOD create {name} -q --with {wheel} {more} "
                       f"--module-type {module_type} --shared {shared} --group {users.group}",
                       system, modules_sh, umask=umask, extra_env=_env(users.alice))
    assert made.returncode == 0, made.stdout + made.stderr
    return made


def _load_and_import(runner, user, modules_sh, system: str, modules_dir: str, name: str):
    return runner.bash(user, f"module use {modules_dir}\nmodule load {name}\n"
                       f"python -c 'import {PKG}, sys; print({PKG}.__file__); print(sys.prefix)'",
                       system, modules_sh, extra_env=_env(user))


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_member_loads_a_shared_env_by_module_use_and_by_a_module_of_their_own(users, base, system):
    """alice shares an env made under umask 077 (group still reads, others nothing); bob loads
    it from DIR/modules, then writes his own module for it (in his root) and loads that, in the
    same module tool; the shared root registers bob's module."""
    require_site()
    tmp, runner, modules_sh, wheel = base
    shared = _alices_shared_root(tmp / f"proj-{system}", users)
    _create_shared(runner, users, modules_sh, wheel, shared, "team", system)
    prefix = shared / "envs/team"

    assert_shared_modes(shared, "team", users)
    for rel in ("envs", "modules", "logs", ".envmod/members"):      # members add, none removes another's
        mode = stat.S_IMODE((shared / rel).stat().st_mode)
        assert mode == 0o3770, (rel, oct(mode))
    assert stat.S_IMODE(shared.stat().st_mode) == 0o2750
    record = (prefix / "envmod.yaml").read_text()
    assert f"maintainer: {users.alice.name}" in record and f"group: {users.group}" in record

    # bob, through the shared root's modules
    ran = _load_and_import(runner, users.bob, modules_sh, system, f"{shared}/modules", "team")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.split()[-2:] == [f"{prefix}/lib/python3.11/site-packages/{PKG}/__init__.py", str(prefix)]

    # bob, through a module of his own, in his own root
    bob_root = Path(users.bob.home) / f"envmod-{system}"
    bob = _env(users.bob, ENVMOD_ROOT=str(bob_root))
    mine = runner.envmod(users.bob, "module", "team", "--shared", str(shared), extra_env=bob)
    assert mine.returncode == 0, mine.stdout + mine.stderr
    assert os.readlink(bob_root / "envs/team") == str(prefix)
    ran = _load_and_import(runner, users.bob, modules_sh, system, f"{bob_root}/modules", "team")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.split()[-1] == str(prefix)
    entry = shared / ".envmod/members" / users.bob.name / "team.yaml"
    assert entry.stat().st_uid == users.bob.uid and str(bob_root / "modules/team") in entry.read_text()
    listed = runner.envmod(users.bob, "list", extra_env=bob)
    assert "team" in listed.stdout, listed.stdout + listed.stderr

    # alice's rebuild (umask 077 again) keeps the shared modes
    rebuilt = runner.bash(users.alice, f"$ENVMOD --root {shared} rebuild team -q", system, modules_sh,
                          umask=0o077, extra_env=_env(users.alice))
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert_shared_modes(shared, "team", users)


def assert_shared_modes(shared: Path, name: str, users) -> None:
    """Group-owned (the sharing group), setgid dirs, the group reads, nothing group- or
    world-writable in the env or its module, and umask 077 respected (others get nothing)."""
    prefix = shared / "envs" / name
    for path in [prefix, *(Path(d) / n for d, dirs, files in os.walk(prefix) for n in dirs + files),
                 *(shared / "modules" / name).iterdir(), shared / "modules" / name]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        assert st.st_gid == users.gid, path
        assert st.st_uid == users.alice.uid, path
        mode = stat.S_IMODE(st.st_mode)
        assert mode & 0o040 and not mode & 0o022 and not mode & 0o007, (path, oct(mode))
        if stat.S_ISDIR(st.st_mode):
            assert mode & stat.S_ISGID and mode & 0o010, (path, oct(mode))


def test_only_the_maintainer_changes_a_shared_env_and_members_remove_only_their_own(users, base):
    require_site()
    tmp, runner, modules_sh, wheel = base
    shared = _alices_shared_root(tmp / "proj-rules", users)
    _create_shared(runner, users, modules_sh, wheel, shared, "team", "lmod", umask=0o022)
    prefix = shared / "envs/team"
    assert stat.S_IMODE(prefix.stat().st_mode) == 0o2755       # umask 022: others may read
    before = tree(shared)

    bob_root = Path(users.bob.home) / "envmod-rules"
    bob = _env(users.bob, ENVMOD_ROOT=str(bob_root))
    for argv, doing in ((["create", "team", "-q", "--python", _python(), "--shared", str(shared), "--force"],
                         "replace it"),
                        (["--root", str(shared), "remove", "team", "--yes"], "remove it"),
                        (["--root", str(shared), "rebuild", "team", "-q"], "rebuild it"),
                        (["--root", str(shared), "module", "team", "--module-type", "tcl"], "rewrite its module")):
        line = one_line_error(runner.envmod(users.bob, *argv, extra_env=bob),
                              f"shared by {users.alice.name}", f"only {users.alice.name} may {doing}")
        assert "nothing was changed" in line
        assert tree(shared) == before, argv

    assert runner.envmod(users.bob, "module", "team", "--shared", str(shared), extra_env=bob).returncode == 0
    # bob's rebuild through his own link is refused the same way
    one_line_error(runner.envmod(users.bob, "rebuild", "team", "-q", extra_env=bob), f"only {users.alice.name} may")
    during = tree(shared)
    alice = _env(users.alice)
    line = one_line_error(runner.envmod(users.alice, "--root", str(shared), "remove", "team", "--yes", extra_env=alice),
                          "is in use", f"{users.bob.name}'s module", "--force")
    assert tree(shared) == during

    gone = runner.envmod(users.bob, "remove", "team", "--yes", extra_env=bob)
    assert gone.returncode == 0 and "removed your module for team" in gone.stdout, gone.stdout + gone.stderr
    assert not os.path.lexists(bob_root / "envs/team") and not (bob_root / "modules/team").exists()
    assert (prefix / "envmod.yaml").is_file() and (shared / "modules/team").is_dir()
    assert not (shared / ".envmod/members" / users.bob.name / "team.yaml").exists()

    done = runner.envmod(users.alice, "--root", str(shared), "remove", "team", "--yes", extra_env=alice)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not prefix.exists() and not (shared / "modules/team").exists()


def test_the_maintainer_removes_with_force_and_the_member_can_still_remove_theirs(users, base):
    require_site()
    tmp, runner, modules_sh, wheel = base
    shared = _alices_shared_root(tmp / "proj-force", users)
    _create_shared(runner, users, modules_sh, wheel, shared, "team", "envmodules")
    bob_root = Path(users.bob.home) / "envmod-force"
    bob, alice = _env(users.bob, ENVMOD_ROOT=str(bob_root)), _env(users.alice)
    assert runner.envmod(users.bob, "module", "team", "--shared", str(shared), extra_env=bob).returncode == 0
    forced = runner.envmod(users.alice, "--root", str(shared), "remove", "team", "--yes", "--force", extra_env=alice)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert not (shared / "envs/team").exists()
    gone = runner.envmod(users.bob, "remove", "team", "--yes", extra_env=bob)     # his link now points at nothing
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not os.path.lexists(bob_root / "envs/team") and not (bob_root / "modules/team").exists()


KERNEL_DRIVER = """
import sys
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

km = KernelManager(kernel_name=sys.argv[2], kernel_spec_manager=KernelSpecManager(kernel_dirs=[sys.argv[1]]))
km.start_kernel()
client = km.client()
try:
    client.start_channels()
    client.wait_for_ready(timeout=120)
    out = []
    reply = client.execute_interactive(sys.argv[3], timeout=120, output_hook=lambda msg: out.append(
        msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""))
    assert reply["content"]["status"] == "ok", reply["content"]
    print("".join(out), end="")
finally:
    client.stop_channels()
    km.shutdown_kernel(now=True)
"""


def test_a_members_kernel_runs_the_shared_env_and_goes_with_their_remove(users, base):
    """bob installs a Jupyter kernel for alice's shared env through his own module: it lands in
    his Jupyter dir, is registered in his entry, and the real jupyter_client, run by bob, starts
    it and prints the shared prefix; alice's remove is refused naming bob's kernel, then forced;
    bob's remove then removes his kernel and his module."""
    require_site()
    tmp, runner, modules_sh, wheel = base
    shared = _alices_shared_root(tmp / "proj-kernel", users)
    _create_shared(runner, users, modules_sh, wheel, shared, "team", "lmod", umask=0o022, more="ipykernel")
    prefix = shared / "envs/team"
    bob_root = Path(users.bob.home) / "envmod-kernel"
    bob, alice = _env(users.bob, ENVMOD_ROOT=str(bob_root)), _env(users.alice)
    assert runner.envmod(users.bob, "module", "team", "--shared", str(shared), extra_env=bob).returncode == 0
    installed = runner.bash(users.bob, "$ENVMOD kernel team", "lmod", modules_sh, extra_env=bob)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    kernels = Path(users.bob.home) / ".local/share/jupyter/kernels"
    kernel = kernels / "envmod-team"
    assert f"in {kernel}" in installed.stdout and kernel.stat().st_uid == users.bob.uid
    assert f"module use -a {bob_root}/modules" in (kernel / "envmod-kernel.sh").read_text()   # his own module
    entry = shared / ".envmod/members" / users.bob.name / "team.yaml"
    assert str(kernel) in entry.read_text()
    assert read_record(prefix / "envmod.yaml").kernels == []      # alice's record is not bob's to write
    # bob's list shows his kernel for it, as it shows those of his own envs
    listed = runner.envmod(users.bob, "list", "--json", extra_env=bob)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert [(r["name"], r["kernels"]) for r in json.loads(listed.stdout)] == [("team", ["envmod-team"])]
    table = runner.envmod(users.bob, "list", extra_env=bob).stdout.splitlines()
    assert table[0].split()[-1] == "KERNELS" and table[1].split()[-1] == "envmod-team", table

    driver = tmp / "kernel_driver.py"
    driver.write_text(KERNEL_DRIVER)
    driver.chmod(0o644)
    ran = runner.run(users.bob, [str(prefix / "bin/python"), str(driver), str(kernels), "envmod-team",
                                 f"import sys, {PKG}; print(sys.prefix, {PKG}.WHO)"], extra_env=bob)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.split() == [str(prefix), "team"]

    line = one_line_error(runner.envmod(users.alice, "--root", str(shared), "remove", "team", "--yes", extra_env=alice),
                          "is in use", f"{users.bob.name}'s module", f"kernel {kernel}", "--force")
    assert prefix.is_dir() and kernel.is_dir(), line
    forced = runner.envmod(users.alice, "--root", str(shared), "remove", "team", "--yes", "--force", extra_env=alice)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert kernel.is_dir()                          # bob's, not alice's to remove
    gone = runner.envmod(users.bob, "remove", "team", "--yes", extra_env=bob)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not kernel.exists() and not (bob_root / "modules/team").exists()
    assert not os.path.lexists(bob_root / "envs/team") and not entry.exists()


# ---- a member registering and the maintainer removing, at the same time ---------------------

HOLD_LOCK = """
import sys
from bridge.config import load_settings
from bridge.store.root import Store

store = Store(load_settings().with_root(sys.argv[1]))
with store.shared_lock(sys.argv[2]) if sys.argv[3] == "shared" else store.lock(sys.argv[2], "removing it"):
    print("held", flush=True)
    sys.stdin.read()
"""


class HeldLock:
    """A process of ``user`` holding the shared env's lock with envmod's own code, as a member's
    registration (``shared``) or the maintainer's remove (``exclusive``) does while it runs: the
    moment the other side arrives, made to last until :meth:`release`."""

    def __init__(self, runner, user, shared_root: Path, name: str, how: str) -> None:
        self.proc = subprocess.Popen([runner.runuser, "-u", user.name, "--", base_python(), "-c", HOLD_LOCK,
                                      str(shared_root), name, how], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd="/", env=runner.environ(user, _env(user)))
        line = self.proc.stdout.readline()
        assert line == "held\n", line + self.proc.stderr.read()

    def release(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0, self.proc.stderr.read()

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.release()


def _no_registration(shared: Path, bob_root: Path, users) -> None:
    assert not (shared / ".envmod/members" / users.bob.name / "team.yaml").exists()
    assert not os.path.lexists(bob_root / "envs/team") and not (bob_root / "modules/team").exists()


def test_a_members_registration_and_the_maintainers_remove_never_overlap(users, base):
    """Each holds the shared env's lock while it works: bob's registration (module, kernel)
    shared, alice's remove exclusive. Whoever comes second is told, in one line, that the env is
    busy (and by whom), and changes nothing; then the ordinary paths work as before. Made under
    umask 077: the lock file is still the group's to read."""
    require_site()
    tmp, runner, modules_sh, wheel = base
    shared = _alices_shared_root(tmp / "proj-race", users)
    _create_shared(runner, users, modules_sh, wheel, shared, "team", "lmod", umask=0o077)
    bob_root = Path(users.bob.home) / "envmod-race"
    bob, alice = _env(users.bob, ENVMOD_ROOT=str(bob_root)), _env(users.alice)
    remove = ("--root", str(shared), "remove", "team", "--yes")

    with HeldLock(runner, users.bob, shared, "team", "shared"):        # bob registering, alice removing
        before = tree(shared)
        one_line_error(runner.envmod(users.alice, *remove, extra_env=alice), "environment 'team' is busy",
                       "a member of its group is registering their own module or kernel for it", code=5)
        assert tree(shared) == before

    with HeldLock(runner, users.alice, shared, "team", "exclusive") as held:     # alice removing, bob registering
        one_line_error(runner.envmod(users.bob, "module", "team", "--shared", str(shared), extra_env=bob),
                       "environment 'team' is busy: envmod (pid ", ") is removing it", code=5)
        _no_registration(shared, bob_root, users)
        assert held.proc.poll() is None

    mine = runner.envmod(users.bob, "module", "team", "--shared", str(shared), extra_env=bob)
    assert mine.returncode == 0, mine.stdout + mine.stderr
    entry = shared / ".envmod/members" / users.bob.name / "team.yaml"
    with HeldLock(runner, users.alice, shared, "team", "exclusive"):      # and bob's kernel for it
        registered = entry.read_text()
        one_line_error(runner.envmod(users.bob, "kernel", "team", extra_env=bob),
                       "environment 'team' is busy", "is removing it", code=5)
        assert entry.read_text() == registered
        assert not (Path(users.bob.home) / ".local/share/jupyter/kernels/envmod-team").exists()

    one_line_error(runner.envmod(users.alice, *remove, extra_env=alice), "is in use", f"{users.bob.name}'s module")
    assert runner.envmod(users.bob, "remove", "team", "--yes", extra_env=bob).returncode == 0
    gone = runner.envmod(users.alice, *remove, extra_env=alice)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    # the env is gone: a registration now finds nothing to point at, and leaves nothing
    one_line_error(runner.envmod(users.bob, "module", "team", "--shared", str(shared), extra_env=bob),
                   "no environment named 'team'", code=4)
    _no_registration(shared, bob_root, users)


def test_a_member_cannot_register_without_the_envs_lock_file_until_the_maintainer_remakes_it(users, base):
    """The create made the lock file. Without it (deleted by hand), a member's registration is
    refused in one line, nothing made: a lock file of the member's own would lock the maintainer
    out. The maintainer's 'envmod --root DIR module NAME' makes it again, for the group to read
    even under umask 077 (one the group cannot read is refused in one line too), and the
    member's registration then works."""
    require_site()
    tmp, runner, modules_sh, wheel = base
    shared = _alices_shared_root(tmp / "proj-nolock", users)
    _create_shared(runner, users, modules_sh, wheel, shared, "team", "envmodules", umask=0o077)
    bob_root = Path(users.bob.home) / "envmod-nolock"
    bob = _env(users.bob, ENVMOD_ROOT=str(bob_root))
    lock = shared / ".envmod/locks/team.lock"
    lock.unlink()
    before = tree(shared)
    one_line_error(runner.envmod(users.bob, "module", "team", "--shared", str(shared), extra_env=bob),
                   f"its lock file {lock} is missing", f"--root {shared} module team", "nothing was changed")
    assert tree(shared) == before
    _no_registration(shared, bob_root, users)

    again = runner.envmod(users.alice, "--root", str(shared), "module", "team", umask=0o077, extra_env=_env(users.alice))
    assert again.returncode == 0, again.stdout + again.stderr
    assert lock.stat().st_uid == users.alice.uid and lock.stat().st_gid == users.gid
    assert stat.S_IMODE(lock.stat().st_mode) == 0o640
    lock.chmod(0o600)                   # one the group cannot read: one line, saying what to do
    one_line_error(runner.envmod(users.bob, "module", "team", "--shared", str(shared), extra_env=bob),
                   f"Permission denied: {lock}", f"chmod g+r {lock}", "nothing was changed")
    _no_registration(shared, bob_root, users)
    lock.chmod(0o640)
    mine = runner.envmod(users.bob, "module", "team", "--shared", str(shared), extra_env=bob)
    assert mine.returncode == 0, mine.stdout + mine.stderr


def test_a_lock_file_a_member_planted_is_refused_and_what_it_names_is_left_alone(users, base):
    """A shared root's .envmod/locks is its group's to write in (sticky): bob can plant a link
    where alice's next create of a new name opens its lock. Followed, it would truncate a file of
    alice's; it is refused in one line instead, and nothing is made."""
    require_site()
    tmp, runner, modules_sh, wheel = base
    shared = _alices_shared_root(tmp / "proj-planted", users)
    _create_shared(runner, users, modules_sh, wheel, shared, "team", "lmod")
    victim = shared / "envs/team/envmod.yaml"          # alice's: the env's record
    record = victim.read_text()
    lock = shared / ".envmod/locks/next.lock"
    planted = runner.run(users.bob, ["ln", "-s", str(victim), str(lock)], 0o022, None)
    assert planted.returncode == 0, planted.stderr
    made = runner.bash(users.alice, f"module load python/3.11\n$ENVMOD create next -q --module-type lmod "
                       f"--shared {shared} --group {users.group}", "lmod", modules_sh, extra_env=_env(users.alice))
    one_line_error(made, f"refusing the lock file {lock}: it is a symbolic link", "nothing was changed")
    assert victim.read_text() == record
    assert not (shared / "envs/next").exists() and not (shared / "modules/next").exists()


# ---- bad input: one line, nothing made ----------------------------------------------------

def _plain_create(runner, user, shared: Path, *more: str):
    return runner.envmod(user, "create", "e", "-q", "--python", _python(), "--module-type", "lmod",
                         "--shared", str(shared), *more, extra_env=_env(user))


def test_a_shared_dir_the_user_cannot_write_is_one_line_and_unchanged(users, base):
    tmp, runner, _, _ = base
    theirs = tmp / "bobs-shared"
    theirs.mkdir()
    os.chown(theirs, users.bob.uid, users.gid)
    theirs.chmod(0o2755)                        # the group's, but only bob writes
    before = tree(theirs)
    line = one_line_error(_plain_create(runner, users.alice, theirs), f"cannot write to the shared root {theirs}",
                          "Permission denied", "nothing was changed")
    assert line.startswith("envmod: error: ")
    assert tree(theirs) == before
    one_line_error(_plain_create(runner, users.alice, theirs / "deeper/envmod"), "cannot write to the shared root")
    assert tree(theirs) == before


def test_a_group_the_user_is_not_in_is_one_line_and_nothing_is_made(users, base):
    tmp, runner, _, _ = base
    other = f"envmodo{os.getpid()}"
    made = subprocess.run(["groupadd", other], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    try:
        shared = _alices_shared_root(tmp / "alices", users)
        one_line_error(_plain_create(runner, users.alice, shared, "--group", other),
                       f"not a member of group {other}", "nothing was changed")
        one_line_error(_plain_create(runner, users.alice, shared, "--group", f"{other}x"),
                       f"--group {other}x: no such group")
        assert list(shared.parent.iterdir()) == []
    finally:
        subprocess.run(["groupdel", other], capture_output=True)
    assert grp.getgrnam(users.group)        # the test's own group is untouched


def test_a_member_cannot_take_a_shared_root_of_another_group(users, base):
    """The shared root is its group's: --group naming another group is refused, nothing made."""
    tmp, runner, _, _ = base
    root = tmp / "team-root"
    root.mkdir()
    os.chown(root, users.alice.uid, users.gid)
    root.chmod(0o2770)
    alice_group = grp.getgrgid(users.alice.gid).gr_name
    one_line_error(_plain_create(runner, users.alice, root, "--group", alice_group),
                   f"belongs to group {users.group}, not {alice_group}")
    assert list(root.iterdir()) == []
