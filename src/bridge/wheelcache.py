"""Wheels compiled against the central stack, kept for reuse while that stack is unchanged.

pip's own wheel cache is keyed by the sdist alone, so a wheel built against one MPI could be
reused against another. Here an entry is found by what the build was asked for (package,
version, Python ABI, platform, build settings, the modules it was built against) and then
*proved* still valid by what it links: every library the wheel's compiled files need must
resolve, with the modules loaded now, to the same SONAME from the same module with the same
file hash (sha256). Any difference is a miss, and the package is compiled again.

Layout: ``<cache>/<package>/<version>/<request key>/<entry>/`` holding the wheel, the unpacked
files (to rescan) and ``entry.json``. Entries are written whole to a temp dir and renamed in,
so a cache shared by a group (``wheel_cache:`` in the site config) is safe for concurrent use.

Everything in an entry is made like any other file the user creates: directories 0777 and files
0666, less the umask, and nothing is chmod-ed afterwards, so the setgid bit (and the group) that
a shared cache root hands down to new directories is kept. With umask 002 and a group-writable
setgid root, every member of the group can read and add entries. A cache that cannot be read or
written costs a compile, never the create: it is said once (one warning line per WheelCache for
reading, one for writing), and the build goes on.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .record import LinkEvidence
from .rules import SourceBuild
from .stack import CentralModule

ENTRY_FILE = "entry.json"
_NOT_CENTRAL = ("system", "env")


@dataclass(frozen=True)
class CacheRequest:
    package: str
    version: str
    soabi: str
    platform: str
    build: SourceBuild

    def key(self) -> str:
        data = [self.package, self.version, self.soabi, self.platform, sorted(self.build.env.items()),
                self.build.module_names]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:24]

    def describe(self) -> dict:
        return {"package": self.package, "version": self.version, "soabi": self.soabi,
                "platform": self.platform, "build_env": dict(self.build.env), "modules": self.build.module_names}


def link_identity(links: Sequence[LinkEvidence]) -> list[list]:
    """What must not change for a wheel to stay valid: its needs on central libraries."""
    return sorted([link.file, link.needs, link.provider, link.soname, link.sha256]
                  for link in links if link.provider not in _NOT_CENTRAL)


def _why(exc: BaseException) -> str:
    """An OSError in a few words: 'Permission denied: /path'."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def _new_dir(parent: Path, prefix: str) -> Path:
    """A fresh directory in ``parent`` made with mode 0777 less the umask (`tempfile.mkdtemp`
    makes 0700, which the rename would carry into the shared cache)."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(parent))


def _stderr_warning(message: str) -> None:
    print(f"envmod: warning: {message}", file=sys.stderr, flush=True)


class WheelCache:
    def __init__(self, root: Path, modules: Sequence[CentralModule], python: str | None,
                 warn: Callable[[str], None] | None = None) -> None:
        self.root = root
        self.modules = list(modules)
        self.python = python
        self.warn = warn or _stderr_warning
        self._warned: set[str] = set()

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            self.warn(" ".join(message.split()))

    def _scan(self, unpacked: Path, on_error: Callable[[str, Exception], None] | None = None) -> list[LinkEvidence]:
        from .evidence import scan_links

        return scan_links(unpacked, self.modules, self.python, on_error=on_error)

    def _unreadable(self, what: Path, exc: BaseException) -> None:
        self._warn_once("read", f"cannot read the wheel cache entry {what} ({_why(exc)}), so it is compiled "
                        "again; a shared cache needs entries its users can read (umask 002 and a setgid, "
                        "group-writable cache directory)")

    def lookup(self, request: CacheRequest) -> tuple[Path | None, str]:
        """A cached wheel valid against the modules loaded now, and why (not) one."""
        base = self.root / request.package / request.version / request.key()
        try:
            entries = sorted((e for e in base.iterdir() if not e.name.startswith(".")), reverse=True)
        except FileNotFoundError:
            entries = []
        except OSError as exc:
            if isinstance(exc, PermissionError):
                self._unreadable(base, exc)
            entries = []
        if not entries:
            return None, "no cached build for these settings"
        reason = "cached builds link other central libraries than the modules provide now"
        for entry in entries:
            try:
                meta = json.loads((entry / ENTRY_FILE).read_text())
                wheel = entry / meta["wheel"]
                links = meta["links"]
                if not wheel.is_file():
                    continue
                with open(wheel, "rb"):         # readable, or pip fails on it later
                    pass
            except PermissionError as exc:
                self._unreadable(entry, exc)
                continue
            except (OSError, ValueError, KeyError, TypeError):
                continue                        # half-written or damaged: a miss, not an error
            denied: list[Exception] = []

            def on_error(path: str, exc: Exception) -> None:
                if isinstance(exc, PermissionError):
                    denied.append(exc)

            now = link_identity(self._scan(entry / "unpacked", on_error))
            if denied:
                self._unreadable(entry, denied[0])
                continue
            if now == links:
                return wheel, f"cached wheel built {meta.get('built', '?')} links the same central libraries"
        return None, reason

    def store(self, request: CacheRequest, wheel: Path, built: str) -> Path | None:
        """Put a freshly built wheel in the cache; never fails the create if the cache is
        unwritable (warns once and returns None)."""
        base = self.root / request.package / request.version / request.key()
        tmp: Path | None = None
        try:
            base.mkdir(parents=True, exist_ok=True)
            tmp = _new_dir(base, ".new-")
            shutil.copyfile(wheel, tmp / wheel.name)        # a new file: 0666 less the umask
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(tmp / "unpacked")
            links = self._scan(tmp / "unpacked")
            meta = {"wheel": wheel.name, "built": built, "request": request.describe(),
                    "links": link_identity(links)}
            (tmp / ENTRY_FILE).write_text(json.dumps(meta, indent=1))
            digest = hashlib.sha256(json.dumps(meta["links"]).encode()).hexdigest()[:16]
            final = base / f"{built.replace(':', '')}-{digest}"
            if final.exists():
                return final / wheel.name
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and final.is_dir():
                    return final / wheel.name            # another process stored the same build
                raise
            tmp = None
            return final / wheel.name
        except (OSError, zipfile.BadZipFile) as exc:
            self._warn_once("write", f"cannot add to the wheel cache {self.root} ({_why(exc)}); the build "
                            "is not cached")
            return None
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
