"""Where environments live under the envmod root, and how they are put in place atomically.

Layout::

    <root>/envs/<name>/            the environment (its record is envs/<name>/envmod.yaml)
    <root>/modules/<name>/py3.11[.lua]
    <root>/logs/<name>/            build logs, kept after failures
    <root>/.envmod/locks/<name>.lock, .envmod/staging/, .envmod/trash/
    <root>/envs/.builds/<name>@<id>/   a conda env, built where it stays; envs/<name> links to it

An env is built in staging and renamed into place; when one exists already (``--force``) the
two are exchanged in one ``renameat2(RENAME_EXCHANGE)`` so the old env stays usable until the
new one is complete, and a reader never sees neither. A conda env cannot move (conda writes its
prefix into files): it is built in its own directory under ``envs/.builds`` and goes live when
the link ``envs/<name>`` is replaced by a new one, renamed over it; the old build is deleted
after the new module is written. A build no link names (a killed create's) is never visible,
and the next create of that name deletes it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Iterable, Iterator

from ..config import Settings, check_root
from ..errors import ConfigError, EnvBusy, EnvExists, EnvNotFound, RecordError
from ..frontends import user_command
from ..fsutil import new_dir, user_name
from .names import validate_env_name
from .record import RECORD_FILE, EnvRecord, read_record

_AT_FDCWD = -100
# What a write under the root fails with when the user may not write there.
_CANNOT_WRITE = (errno.EACCES, errno.EPERM, errno.EROFS)
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False when the kernel or file system cannot."""
    import ctypes  # only a --force replace needs it

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _busy(name: str, fd: int) -> EnvBusy:
    """``name``'s lock (open at ``fd``) is held by another process: say by whom. A writer holds it
    exclusively and writes what it is doing into the lock file on taking it; a member of a shared
    env's group holds it shared and cannot write there (the text is then a past writer's). Which
    one holds it shows in whether it can be taken shared, here, for a moment."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        holder = "a member of its group is registering their own module or kernel for it"
    return EnvBusy(f"environment {name!r} is busy: {holder}", hint="wait for it to finish, then try again")


class Store:
    def __init__(self, settings: Settings) -> None:
        check_root(settings.root)
        self.settings = settings

    # ---- paths -------------------------------------------------------------------------
    def env_path(self, name: str) -> Path:
        return self.settings.envs_dir / validate_env_name(name)

    def record_path(self, name: str) -> Path:
        return self.env_path(name) / RECORD_FILE

    @property
    def builds_dir(self) -> Path:
        return self.settings.envs_dir / ".builds"

    def build_of(self, path: Path) -> Path | None:
        """The build directory under ``envs/.builds`` that the link ``path`` names, if any."""
        if not path.is_symlink():
            return None
        target = Path(os.path.realpath(path))
        return target if target.parent == Path(os.path.realpath(self.builds_dir)) else None

    def log_dir(self, name: str) -> Path:
        return self.settings.logs_dir / validate_env_name(name)

    def _state(self, kind: str) -> Path:
        path = self.settings.state_dir / kind
        with self._root_writes():
            path.mkdir(parents=True, exist_ok=True)
        return path

    # ---- a root this user cannot write -------------------------------------------------
    @contextlib.contextmanager
    def _root_writes(self) -> Iterator[None]:
        """Turn a write refused under the root (another user's directory, a read-only file
        system) into one line naming it, instead of a traceback."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in _CANNOT_WRITE:
                raise
            raise self._unwritable(exc.filename or self.settings.root, exc.strerror or str(exc)) from None

    def _unwritable(self, path: Path | str, why: str) -> ConfigError:
        return ConfigError(f"cannot write to the envmod root {self.settings.root}: {why}: {path}",
                           hint="use a root you can write: --root, $ENVMOD_ROOT or 'root:' in the config; "
                           "nothing was changed")

    def check_writable(self, name: str) -> None:
        """Refuse up front when a create of ``name`` could not write its env, log or module:
        found only after the build, that would leave an env without its module."""
        self.check_can_make((self.settings.envs_dir, self.log_dir(name), self.settings.modules_dir / name))

    def check_can_make(self, directories: Iterable[Path]) -> None:
        """Refuse, in one line, directories this user could not make (or write in)."""
        for directory in directories:
            existing = next(d for d in (directory, *directory.parents) if d.exists())
            if not existing.is_dir():
                raise self._unwritable(existing, os.strerror(errno.ENOTDIR))
            if not os.access(existing, os.W_OK | os.X_OK):
                raise self._unwritable(existing, os.strerror(errno.EACCES))

    # ---- reading -----------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return self.env_path(name).is_dir() or self.build_of(self.env_path(name)) is not None

    def load(self, name: str) -> EnvRecord:
        path = self.record_path(name)
        if not path.parent.is_dir() and path.parent.is_symlink():
            raise RecordError(f"environment {name!r} links to {os.readlink(path.parent)}, which does not exist")
        if not path.parent.is_dir():
            raise EnvNotFound(f"no environment named {name!r} under {self.settings.envs_dir}",
                              hint=f"'{user_command()} list' shows the environments there are")
        return read_record(path)

    def names(self) -> list[str]:
        envs = self.settings.envs_dir
        if not envs.is_dir():
            return []
        return sorted(p.name for p in envs.iterdir() if not p.name.startswith(".") and (p / RECORD_FILE).is_file())

    def records(self) -> Iterator[tuple[str, EnvRecord | RecordError]]:
        for name in self.names():
            try:
                yield name, self.load(name)
            except RecordError as exc:
                yield name, exc

    # ---- writing -----------------------------------------------------------------------
    def lock_path(self, name: str) -> Path:
        return self.settings.state_dir / "locks" / f"{validate_env_name(name)}.lock"

    @contextlib.contextmanager
    def lock(self, name: str, action: str = "using it") -> Iterator[None]:
        """Hold the env's lock; a second process gets :class:`EnvBusy` at once, not a wait."""
        self._state("locks")
        fd = self._open_own_lock_file(self.lock_path(name))
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _busy(name, fd) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"envmod (pid {os.getpid()}) is {action}".encode(), 0)
            self._sweep_killed_writes(name)
            yield
        finally:
            os.close(fd)

    def _open_own_lock_file(self, path: Path) -> int:
        """Open (or make) the lock file at ``path`` for writing, refusing one this user did not
        make: a group-shared root's ``locks/`` is its group's to write, and a member could plant
        there a link (which the writer would follow and truncate: its own files) or a file of
        their own (which they could replace under a held lock)."""
        with self._root_writes():
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise self._foreign_lock(path, "it is a symbolic link") from None
        info = os.fstat(fd)
        problem = ("it is not a regular file" if not stat.S_ISREG(info.st_mode) else
                   f"it belongs to {user_name(info.st_uid)}" if info.st_uid != os.geteuid() else None)
        if problem:
            os.close(fd)
            raise self._foreign_lock(path, problem)
        return fd

    def _foreign_lock(self, path: Path, problem: str) -> ConfigError:
        return ConfigError(f"refusing the lock file {path}: {problem}, not a file envmod made as you",
                           hint="someone else put it there: look at it, remove it, then try again; nothing was changed")

    @contextlib.contextmanager
    def shared_lock(self, name: str) -> Iterator[None]:
        """Hold the env's lock shared, as a member of a group-shared env's group does while
        registering a module or kernel of their own for it: members at once, but never while a
        writer (the maintainer's create, rebuild, remove, ...) holds it, nor a writer while they do.
        The lock file is opened read-only (members may not write the shared root's state) and
        must exist: the env's create made it. Made here it would be the member's own file, which
        the maintainer could not lock (and which they could replace), so its absence is refused."""
        path = self.lock_path(name)
        try:
            # a FIFO or a link someone else put in its place neither blocks nor leads elsewhere
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise ConfigError(f"cannot lock environment {name!r} under {self.settings.root}: its lock file {path} "
                              "is missing", hint=f"whoever maintains it makes it again, for its group to read, with "
                              f"'{user_command()} --root {self.settings.root} module {name}'; nothing was changed") from None
        except OSError as exc:
            raise ConfigError(f"cannot lock environment {name!r} under {self.settings.root}: {exc.strerror}: {path}",
                              hint=f"whoever maintains it lets its group read it ('chmod g+r {path}'); "
                              "nothing was changed") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _busy(name, fd) from None
            yield
        finally:
            os.close(fd)

    def _sweep_killed_writes(self, name: str) -> None:
        """Remove the temporary names a writer of ``name`` killed with SIGKILL left: the link
        (or, after an exchange, the replaced env) at ``envs/.NAME.link-PID``, and the temp files
        of a modulefile write. Every writer of them holds this lock, so whoever holds it now
        knows they are orphans. Only this user's own are touched (a group-shared root's
        directories are its group's to write in: a member's planted link may name the live
        build), and a link is only unlinked: the build it named, if not live, is the next
        create's to sweep (:meth:`clean_stale`)."""
        uid = os.geteuid()
        for leftover in [*self.settings.envs_dir.glob(f".{name}.link-*"),
                         *(self.settings.modules_dir / name).glob(".tmp-*")]:
            with contextlib.suppress(OSError):
                if leftover.lstat().st_uid != uid:
                    continue
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink()

    def new_staging(self, name: str) -> Path:
        """A fresh staging dir beside ``envs`` (same file system, so the final rename is atomic),
        made 0777 less the umask: renamed into place, it is the env, which the user's colleagues
        may run as they may read its module."""
        self.check_writable(name)
        with self._root_writes():
            self.settings.envs_dir.mkdir(parents=True, exist_ok=True)
        self.clean_stale(name)
        return new_dir(self._state("staging"), f"{name}@")

    def new_build(self, name: str) -> Path:
        """A fresh build directory for a conda env of ``name``, where it will stay (0777 less the
        umask, as a staging dir)."""
        self.check_writable(name)
        with self._root_writes():
            self.builds_dir.mkdir(parents=True, exist_ok=True)
        self.clean_stale(name)
        return new_dir(self.builds_dir, f"{name}@")

    def clean_stale(self, name: str) -> None:
        """Drop what a killed create of ``name`` left (and builds no link names); called with the
        env's lock held."""
        for kind in ("staging", "trash"):
            base = self.settings.state_dir / kind
            if base.is_dir():
                for leftover in base.glob(f"{name}@*"):
                    shutil.rmtree(leftover, ignore_errors=True)
        if self.builds_dir.is_dir():
            live = self.build_of(self.env_path(name))
            for build in self.builds_dir.glob(f"{name}@*"):
                if live is None or os.path.realpath(build) != str(live):
                    shutil.rmtree(build, ignore_errors=True)

    def commit_link(self, name: str, build: Path) -> Path | None:
        """Make ``envs/<name>`` a link to ``build`` (a symlink renamed over the old link, or
        exchanged with an env directory); return what it replaced (to :meth:`discard`)."""
        final = self.env_path(name)
        tmp = final.with_name(f".{final.name}.link-{os.getpid()}")
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(build, tmp)
        if final.is_symlink() or not final.exists():
            old = self.build_of(final)
            os.replace(tmp, final)
            return old
        if _exchange(tmp, final):
            return tmp          # the old env directory, now at tmp
        old = self._trash_slot(name)
        os.rename(final, old)
        os.replace(tmp, final)
        return old

    def commit(self, name: str, staging: Path) -> Path | None:
        """Put ``staging`` at the env's path; return where the replaced env now is (to delete)."""
        final = self.env_path(name)
        if not final.exists():
            os.rename(staging, final)
            return None
        if _exchange(staging, final):
            return staging          # staging now holds the old env
        old = self._trash_slot(name)
        os.rename(final, old)
        os.rename(staging, final)
        return old

    def _trash_slot(self, name: str) -> Path:
        return self._state("trash") / f"{name}@{os.getpid()}-{time.time_ns()}"

    def discard(self, path: Path | None) -> None:
        """Delete a replaced env: a directory, or a link to a conda build (the build with it)."""
        if path is None:
            return
        if path.is_symlink():
            build = self.build_of(path)
            path.unlink()
            path = build
            if path is None:
                return
        shutil.rmtree(path, ignore_errors=True)

    # ---- envs built elsewhere ------------------------------------------------------------
    def registered_target(self, name: str) -> str | None:
        """Where a registered env's link points (resolved), or None when ``name`` is not registered
        (a conda env's link to its own build is no registration)."""
        link = self.env_path(name)
        return os.path.realpath(link) if link.is_symlink() and self.build_of(link) is None else None

    def register(self, name: str, prefix: Path | str) -> Path:
        """Link ``<root>/envs/<name>`` to an env built at ``prefix`` (its record inside), replacing
        an older registration at once (a symlink renamed over it). An env envmod itself built
        under that name is never replaced."""
        link = self.env_path(name)
        target = Path(os.path.realpath(prefix))
        if not (target / RECORD_FILE).is_file():
            raise RecordError(f"cannot register {name!r}: {target} holds no {RECORD_FILE}")
        if (link.exists() and not link.is_symlink()) or self.build_of(link) is not None:
            raise EnvExists(f"cannot register {name!r}: an environment of that name exists at {link}",
                            hint="'envmod remove' it first, or register under another name")
        if link.is_symlink() and Path(os.path.realpath(link)) == target:
            return link
        tmp = link.with_name(f".{link.name}.link-{os.getpid()}")
        try:
            link.parent.mkdir(parents=True, exist_ok=True)
            if tmp.is_symlink():
                tmp.unlink()
            os.symlink(target, tmp)
            os.replace(tmp, link)
        except OSError as exc:
            raise ConfigError(f"cannot register {name!r} at {link}: {exc.strerror}",
                              hint="the envmod root must be writable ($ENVMOD_ROOT or 'root:' in the config)") from None
        return link

    def remove_env_dir(self, name: str) -> None:
        final = self.env_path(name)
        build = self.build_of(final)
        if build is not None:        # a conda env: the link goes first (gone from view), then its build
            final.unlink()
            shutil.rmtree(build, ignore_errors=True)
            return
        if final.is_symlink():
            final.unlink()           # unregister only: the env belongs to the tool that built it
            return
        if not final.exists():
            return
        trash = self._trash_slot(name)
        os.rename(final, trash)      # gone from view at once, deleted after
        shutil.rmtree(trash, ignore_errors=True)
