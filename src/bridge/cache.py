"""A small on-disk cache of facts that are slow to learn and cheap to key.

Like virtualenv's interpreter cache: asking an interpreter or a module tool costs a process
start, so the answer is kept, keyed by everything that could change it (paths, mtimes, sizes).
A stale or corrupt entry is simply recomputed; the cache never decides correctness.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Callable


def file_stamp(path: str) -> list:
    """What identifies a file's current content cheaply: inode, size, mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return [path, None]
    return [path, st.st_ino, st.st_size, st.st_mtime_ns]


class JsonCache:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def _path(self, kind: str, key: Any) -> Path | None:
        if self.directory is None:
            return None
        # The entry holds its key, which decides a hit: the name only spreads entries out, so a
        # checksum does (hashlib would load OpenSSL on every command's start).
        text = json.dumps(key, sort_keys=True).encode()
        digest = f"{zlib.crc32(text):08x}{zlib.adler32(text):08x}"
        return self.directory / kind / f"{digest}.json"

    def get_or_compute(self, kind: str, key: Any, compute: Callable[[], Any],
                       valid: Callable[[Any], bool] | None = None) -> Any:
        """The value stored under ``key``, else ``compute()`` (stored); an entry that ``valid``
        refuses (the wrong shape) is a miss like a corrupt one."""
        path = self._path(kind, key)
        if path is not None:
            try:
                with open(path, encoding="utf-8") as fh:
                    # only the user's own entries: in a cache_dir others can write, theirs could lie
                    entry: Any = json.load(fh) if os.fstat(fh.fileno()).st_uid == os.geteuid() else {}
                if entry.get("key") == json.loads(json.dumps(key)) and (valid is None or valid(entry["value"])):
                    return entry["value"]
            except (OSError, ValueError, AttributeError, KeyError, TypeError):
                pass
        value = compute()
        if path is not None:
            self._store(path, {"key": key, "value": value})
        return value

    @staticmethod
    def _store(path: Path, entry: dict) -> None:
        from .fsutil import atomic_write_text  # here: only a miss writes (fsutil loads hashlib)

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(entry))
        except (OSError, TypeError, ValueError):
            # an unwritable cache, a full disk, a directory where the entry goes, a value JSON cannot
            # hold: the value is returned, not kept (atomic_write_text leaves no temp file)
            pass
