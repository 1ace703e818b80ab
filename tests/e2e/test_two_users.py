"""Permissions, tried with two real users (``useradd``) sharing a group (``groupadd``): an env is
as open as its creator's umask makes it, in both module tools, and a root the user may not
write is one line, with nothing changed.

Nothing here compiles (creates install no packages), so these are not marked slow. They need
root to make the users, and skip saying so otherwise; CI runs as root.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from tests.conftest import SYSTEMS, require_site, site_dir
from tests.users import AsUser, base_python, copy_modules_sh, install_for_users


@pytest.fixture(scope="module")
def shared(users):
    """A directory every user can read (pytest's tmp_path of root is not), with envmod in it."""
    base = Path(tempfile.mkdtemp(prefix="envmod-two-users-"))
    try:
        base.chmod(0o755)
        runner = AsUser(install_for_users(base / "envmod"))
        yield base, runner
    finally:
        shutil.rmtree(base, ignore_errors=True)


def owned_dir(path: Path, user, mode: int = 0o755) -> Path:
    path.mkdir(parents=True)
    os.chown(path, user.uid, user.gid)
    path.chmod(mode)
    return path


def tree(root: Path) -> list[str]:
    return sorted(str(Path(d, n).relative_to(root)) for d, dirs, files in os.walk(root) for n in dirs + files)


def one_line_error(proc, starts: str) -> str:
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(starts), lines[0]
    return lines[0]


# ---- (a) an env follows its creator's umask -----------------------------------------------

@pytest.mark.parametrize("system", SYSTEMS)
def test_a_colleague_loads_and_runs_an_env_made_under_umask_022(users, shared, system):
    """alice makes an env (umask 022) with the site's Python loaded; bob, who can read her
    modulefile, loads it in the same module tool and runs its Python (an env left 0700, as
    staging made it, let him load the module but not run the env)."""
    require_site()
    base, runner = shared
    root = owned_dir(base / f"root-a-{system}", users.alice)
    modules_sh = copy_modules_sh(base)
    env = {"ENVMOD_ROOT": str(root), "XDG_CACHE_HOME": f"{users.alice.home}/.cache"}
    module_type = "lmod" if system == "lmod" else "tcl"
    made = runner.bash(users.alice, f"module load python/3.11\n$ENVMOD create shared -q --module-type {module_type}",
                       system, modules_sh, umask=0o022, extra_env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    prefix = root / "envs/shared"
    ran = runner.bash(users.bob, f"module use {root}/modules\nmodule load shared\n"
                      "python -c 'import sys; print(sys.prefix)'", system, modules_sh,
                      extra_env={"XDG_CACHE_HOME": f"{users.bob.home}/.cache"})
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == str(prefix), "bob's python is not the env's"
    assert stat.S_IMODE(prefix.stat().st_mode) == 0o755


def test_an_env_made_under_umask_077_stays_private(users, shared):
    """The other side of following the umask: a private umask makes a private env."""
    base, runner = shared
    root = owned_dir(base / "root-private", users.alice)
    made = runner.envmod(users.alice, "create", "mine", "-q", "--python", str(_python()), "--module-type", "lmod",
                         umask=0o077, extra_env={"ENVMOD_ROOT": str(root)})
    assert made.returncode == 0, made.stdout + made.stderr
    assert stat.S_IMODE((root / "envs/mine").stat().st_mode) == 0o700
    ran = runner.run(users.bob, [str(root / "envs/mine/bin/python"), "-c", "pass"])
    assert ran.returncode != 0


def _python() -> Path:
    """The site's Python when it is built, else the interpreter running envmod (a create with
    no packages needs nothing more)."""
    site_python = site_dir() / "software/python/3.11.2/bin/python3"
    return site_python if site_python.exists() else Path(base_python())


# ---- (b) a root the user cannot write ------------------------------------------------------

def _create(runner, user, root: Path):
    return runner.envmod(user, "create", "e", "-q", "--python", str(_python()), "--module-type", "lmod",
                         extra_env={"ENVMOD_ROOT": str(root)})


def test_a_root_owned_by_another_user_is_one_line_and_unchanged(users, shared):
    base, runner = shared
    root = owned_dir(base / "root-of-bob", users.bob)
    (root / "envs").mkdir()
    os.chown(root / "envs", users.bob.uid, users.bob.gid)
    before = tree(root)
    line = one_line_error(_create(runner, users.alice, root), f"envmod: error: cannot write to the envmod root {root}: "
                          "Permission denied")
    assert "nothing was changed" in line
    assert tree(root) == before


def test_a_missing_root_under_a_directory_the_user_cannot_write_is_one_line(users, shared):
    base, runner = shared
    parent = owned_dir(base / "bobs-dir", users.bob)
    one_line_error(_create(runner, users.alice, parent / "envmod"), "envmod: error: cannot write to the envmod root")
    assert tree(parent) == []


@pytest.mark.parametrize("blocked", ["modules", "logs", "envs"])
def test_a_root_with_a_directory_the_user_cannot_write_is_refused_before_building(users, shared, blocked):
    """The root is alice's but one of its directories is not: refused before anything is built,
    not after (an env put in place whose module cannot be written)."""
    base, runner = shared
    root = owned_dir(base / f"root-blocked-{blocked}", users.alice)
    (root / blocked).mkdir()                  # root's, 0755: alice may not write in it
    line = one_line_error(_create(runner, users.alice, root), "envmod: error: cannot write to the envmod root")
    assert str(root / blocked) in line
    assert not (root / "envs/e").exists() and not (root / "modules/e").exists()
    assert not (root / "logs/e").exists()
    assert not list((root / ".envmod").glob("staging/*")) and not list((root / ".envmod").glob("trash/*"))
