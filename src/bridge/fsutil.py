"""Writing files so that a reader sees the old content or the new, never half of either; scratch
directories that never outlive their run, even a killed one."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def current_umask() -> int:
    """The process's umask (reading it means setting it: it is put straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def new_dir(parent: Path, prefix: str, mode: int = 0o777) -> Path:
    """A fresh, uniquely named directory in ``parent``, made with ``mode`` less the umask like any
    directory the user makes. `tempfile.mkdtemp` makes 0700, and a directory that is renamed
    into place (an env, a wheel cache entry) would carry that 0700 with it."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(parent))


def atomic_write_text(target: Path, text: str, mode: int | None = None) -> Path:
    """Write ``text`` to a temp file beside ``target`` and rename it over ``target``."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def file_sha256(path: Path) -> str:
    """The sha256 of a file's content, read in 1 MiB blocks (wheels and images are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_tree(path: Path) -> None:
    """Delete a tree that may hold read-only directories (compileall and pip leave some, an
    unpacked image has them): each is made writable first, then everything is removed."""
    for dirpath, _, _ in os.walk(path):
        try:
            os.chmod(dirpath, 0o700)
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)


def effective_user() -> str:
    """The name of the user this process writes as (its effective uid): per-user directories of
    caches and shared roots."""
    return user_name(os.geteuid())


def user_name(uid: int) -> str:
    """The login name of ``uid``; the number when the password database does not know it."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


#: envmod-KIND.PID.HOST.RANDOM: whose a scratch directory is, so that a later run can tell one a
#: killed process left behind.
_SCRATCH = re.compile(r"envmod-[a-z]+\.(\d+)\.(.+)\.[^.]+")
_swept = False


@contextmanager
def scratch_dir(kind: str) -> Iterator[Path]:
    """A private temporary directory (``$TMPDIR``) for one piece of work, removed on any exit.
    A process killed with SIGKILL cannot remove its own, so the first scratch directory a run
    makes removes first those of this user and host whose process is gone."""
    base = Path(tempfile.gettempdir())
    global _swept
    if not _swept:
        _swept = True
        sweep_orphaned_scratch(base)
    path = Path(tempfile.mkdtemp(prefix=f"envmod-{kind}.{os.getpid()}.{socket.gethostname()}.", dir=base))
    try:
        yield path
    finally:
        remove_tree(path)


def sweep_orphaned_scratch(base: Path) -> None:
    """Remove the scratch directories in ``base`` that a process of this user on this host left
    behind when it was killed (its pid is gone). Another node's (a shared ``$TMPDIR``) and a
    running process's are left alone."""
    host, uid = socket.gethostname(), os.geteuid()
    try:
        entries = list(os.scandir(base))
    except OSError:
        return
    for entry in entries:
        match = _SCRATCH.fullmatch(entry.name)
        if not match or match.group(2) != host:
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != uid:
                continue
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            remove_tree(Path(entry.path))
        except OSError:
            continue
