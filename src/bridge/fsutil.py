"""Writing files so that a reader sees the old content or the new, never half of either."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path


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
    """The name of the user this process writes as (its effective uid; the number when the
    password database does not know it): per-user directories of caches and shared roots."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
