"""Real users for the permission tests: two users sharing a group that the test creates, and an
envmod they can run.

Made with ``groupadd``/``useradd`` (names carry this process's id, so parallel runs do not meet)
and removed with ``userdel -r``/``groupdel`` when the test session ends. Commands run as them
with ``runuser``, each with the umask it is given. The repository (and its .venv) may live where
other users cannot go, so :func:`install_for_users` copies envmod's package and the packages it
imports into a directory every user can read, run by the base interpreter.
"""

from __future__ import annotations

import grp
import importlib.util
import os
import pwd
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pytest

from tests.conftest import REPO, skip_or_fail

_SBIN = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
# What envmod imports (pyproject's dependencies), by the name it is imported as.
_IMPORTS = ("bridge", "jinja2", "markupsafe", "yaml", "_yaml", "packaging", "archspec")


def _tool(name: str) -> str:
    path = shutil.which(name, path=_SBIN)
    if not path:
        skip_or_fail(f"{name} not found (it comes with passwd/util-linux)")
    return path


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class Users:
    """Two real users, ``alice`` and ``bob``, both members of ``group`` (gid ``gid``)."""

    alice: User
    bob: User
    group: str
    gid: int


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def make_users() -> tuple[Users, Callable[[], None]]:
    """Create the group and its two users; return them and what removes them again."""
    if os.geteuid() != 0:
        pytest.skip("tests with two real users need root (groupadd, useradd, runuser); CI runs them as root")
    groupadd, useradd, userdel, groupdel = (_tool(t) for t in ("groupadd", "useradd", "userdel", "groupdel"))
    _tool("runuser")
    tag = os.getpid()
    group, names = f"envmodg{tag}", (f"envmoda{tag}", f"envmodb{tag}")
    made: list[tuple[str, ...]] = []

    def remove() -> None:
        for argv in reversed(made):
            _run(argv)

    proc = _run([groupadd, group])
    if proc.returncode != 0:
        skip_or_fail(f"groupadd {group} failed: {proc.stderr.strip()}")
    made.append((groupdel, group))
    for name in names:
        proc = _run([useradd, "--create-home", "--shell", "/bin/bash", "--groups", group, name])
        if proc.returncode != 0:
            remove()
            skip_or_fail(f"useradd {name} failed: {proc.stderr.strip()}")
        made.append((userdel, "--remove", name))
    alice, bob = (pwd.getpwnam(n) for n in names)
    users = Users(*(User(p.pw_name, p.pw_uid, p.pw_gid, p.pw_dir) for p in (alice, bob)),
                  group=group, gid=grp.getgrnam(group).gr_gid)
    return users, remove


def install_for_users(dest: Path) -> Path:
    """Copy envmod, laid out as installed, and what it imports into ``dest/lib`` (readable by
    all); return that dir."""
    lib = dest / "lib"
    lib.mkdir(parents=True)
    for name in _IMPORTS:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue                 # _yaml: only some PyYAML versions have it at the top
        origin = Path(spec.origin)
        if spec.submodule_search_locations:
            shutil.copytree(origin.parent, lib / origin.parent.name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, lib / origin.name)
    # where an installed envmod keeps its templates (pyproject: force-include)
    shutil.copytree(REPO / "templates", lib / "bridge/templates")
    for path in [dest, *(Path(d) / n for d, dirs, files in os.walk(dest) for n in dirs + files)]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return lib


def base_python() -> str:
    """The interpreter behind this venv: its files (/usr/bin, /usr/lib) are every user's."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


class AsUser:
    """Runs commands as a real user, with a umask, envmod importable from ``lib``."""

    def __init__(self, lib: Path) -> None:
        self.lib = lib
        self.runuser = _tool("runuser")

    def environ(self, user: User, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": user.home,
               "USER": user.name, "PYTHONPATH": str(self.lib), "PYTHONDONTWRITEBYTECODE": "1",
               "ENVMOD_SITE": os.environ.get("ENVMOD_SITE", "/opt/envmod-site")}
        env.update(extra or {})
        return env

    def run(self, user: User, argv: Sequence[str], umask: int = 0o022,
            extra_env: Mapping[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        script = f"umask {umask:03o} && exec \"$@\""
        return subprocess.run([self.runuser, "-u", user.name, "--", "/bin/sh", "-c", script, "sh", *argv],
                              capture_output=True, text=True, timeout=timeout, cwd="/",
                              env=self.environ(user, extra_env), stdin=subprocess.DEVNULL)

    def envmod(self, user: User, *args: str, umask: int = 0o022, extra_env: Mapping[str, str] | None = None):
        return self.run(user, [base_python(), "-m", "bridge", *args], umask, extra_env)

    def bash(self, user: User, script: str, system: str, modules_sh: Path, umask: int = 0o022,
             extra_env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        """``script`` in bash with one real module system, ``$ENVMOD`` running envmod."""
        preamble = (f"set -e\nsource {shlex.quote(str(modules_sh))}\n"
                    f"{'use_lmod' if system == 'lmod' else 'use_envmodules'}\n"
                    f"ENVMOD={shlex.quote(shlex.quote(base_python()) + ' -m bridge')}\n")
        return self.run(user, ["/bin/bash", "--noprofile", "--norc", "-c", preamble + script], umask, extra_env)


def copy_modules_sh(dest: Path) -> Path:
    """ci/modules.sh where every user can source it."""
    target = dest / "modules.sh"
    shutil.copyfile(REPO / "ci/modules.sh", target)
    target.chmod(0o644)
    return target
