"""Writing files so that a reader sees the old content or the new, never half of either."""

from __future__ import annotations

import errno
import os
import secrets
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
