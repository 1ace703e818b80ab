"""Jinja2's bytecode cache for envmod's templates, kept where only this user can write.

A cache entry is marshalled Python code that Jinja2 runs, and ``FileSystemBytecodeCache`` checks
nothing about a directory it is given (only its own default, a per-user 0700 directory in the
system temp dir, is checked). ``cache_dir`` may be a site's, shared by many users, so each user
gets a directory of their own inside it, 0700, and an entry is loaded only if this user owns it
and no one else can write it (which also holds if the directory was swapped after the check).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import jinja2
from jinja2.bccache import Bucket


class PrivateBytecodeCache(jinja2.FileSystemBytecodeCache):
    """``FileSystemBytecodeCache`` that skips any entry another user could have written, and
    for which a damaged entry or a cache it cannot write costs time, never the render."""

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            with open(self._get_cache_filename(bucket), "rb") as fh:
                if written_only_by_me(os.fstat(fh.fileno())):
                    bucket.load_bytecode(fh)
        except Exception:        # noqa: BLE001 -- none yet, unreadable, or damaged past the header
            bucket.reset()       # (read with pickle, which fails in many ways): compiled and stored again

    def dump_bytecode(self, bucket: Bucket) -> None:
        try:
            super().dump_bytecode(bucket)     # a temp file renamed into place; removed on failure
        except OSError:          # full disk, directory gone: the next render compiles again
            pass


def written_only_by_me(st: os.stat_result) -> bool:
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def private_directory(cache_dir: Path) -> Path | None:
    """``cache_dir/templates-<uid>``, made 0700 and owned by this user; None if it cannot be
    (then templates are compiled on every render, which is only slower)."""
    directory = cache_dir / f"templates-{os.getuid()}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=stat.S_IRWXU)
        except FileExistsError:
            pass
        st = os.lstat(directory)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) != stat.S_IRWXU:
            os.chmod(directory, stat.S_IRWXU)      # ours, made looser by hand: tighten it, as Jinja2 does
            st = os.lstat(directory)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) != stat.S_IRWXU:
        return None              # a symlink, or someone else's: never read code from there
    return directory


def bytecode_cache(cache_dir: Path | None) -> PrivateBytecodeCache | None:
    directory = private_directory(cache_dir) if cache_dir is not None else None
    return PrivateBytecodeCache(str(directory)) if directory is not None else None
