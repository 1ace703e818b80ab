"""Wheels compiled against the central stack, kept for reuse while that stack is unchanged.

pip's own wheel cache is keyed by the sdist alone, so a wheel built against one MPI could be
reused against another. Here an entry is found by what the build was asked for (package,
version, Python ABI, platform, build settings, the modules it was built against) and then
*proved* still valid by what it links: every library the wheel's compiled files need must
resolve, with the modules loaded now, to the same SONAME from the same module with the same
file hash (sha256). Any difference is a miss, and the package is compiled again.

Layout: ``<cache>/<writer>/<package>/<version>/<request key>/<entry>/`` holding the wheel, the
unpacked files (to rescan) and ``entry.json``; ``<writer>`` is the user who stored it. Entries
are written whole to a temp dir and renamed in, so a cache shared by a group (``wheel_cache:`` in
the site config) is safe for concurrent use, and a lookup reads every writer's entries.

Modes follow the user's umask like any other file they make, except where another user could
then change what a writer stored: the setgid bit (and the group) that a shared cache root hands
down is kept, and with umask 002 the group can read everything, but

* a writer's directories are writable by the writer alone (0755 less the umask), and an entry is
  sealed before it is renamed in (every write bit taken off its files and directories), so no
  one else can change, add, rename or remove anything of theirs;
* ``entry.json`` records the wheel's sha256, and a wheel is reused only when its bytes still hash
  to it: a mismatch is a miss with a warning, never installed;
* an entry is used only while that holds: everything from its writer's directory down belongs
  to one user and is writable by no other, and the cache root is sticky if others may write it
  (a site sharing a cache makes it ``chmod 3775``: setgid and sticky, group-writable).

A cache that cannot be read or written costs a compile, never the create: it is said once (one
warning line per WheelCache for each kind of problem), and the build goes on. Sealed entries are
removed with ``chmod -R u+w`` first.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..discover.stack import CentralModule
from ..fsutil import effective_user, file_sha256, new_dir
from ..store.record import LinkEvidence
from .rules import SourceBuild

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


_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def _writer_dirs(base: Path, top: Path) -> None:
    """Make ``top`` (the cache root) if missing, sticky, and each directory from it down to
    ``base`` 0755 less the umask: writable by this user alone whatever the umask, so no one else
    can add, rename or remove anything in them."""
    if not top.is_dir():
        top.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(top, 0o1777)        # sticky: it may be group-writable (umask 002)
        except FileExistsError:
            pass
    for directory in reversed([base, *list(base.parents)[:len(base.relative_to(top).parts) - 1]]):
        try:
            os.mkdir(directory, 0o755)
        except FileExistsError:
            pass
        st = directory.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise PermissionError(errno.EACCES, "it belongs to another user", str(directory))
        if st.st_mode & _OTHERS_WRITE:
            os.chmod(directory, stat.S_IMODE(st.st_mode) & ~_OTHERS_WRITE)


def _guarded(entry: Path) -> bool:
    """Only the entry's writer can have changed it: everything from the writer's directory down
    to the entry and in it belongs to one user and is writable by no other."""
    writer = entry.parents[3]
    paths = [writer, *reversed(list(entry.parents)[:3]), entry,
             *(Path(d) / n for d, dirs, files in os.walk(entry) for n in dirs + files)]
    try:
        uid = writer.lstat().st_uid
        for path in paths:
            st = path.lstat()
            if st.st_uid != uid or (not stat.S_ISLNK(st.st_mode) and st.st_mode & _OTHERS_WRITE):
                return False
    except OSError:
        return False                    # what cannot be looked at cannot be vouched for
    return True


def _set_writable(entry: Path, writable: bool) -> None:
    """Take every write bit off an entry's files and directories (sealed), or give its writer's
    back (to delete it). chmod keeps the setgid bit: the writer is in the group it shares."""
    paths = [entry, *(Path(d) / n for d, dirs, files in os.walk(entry) for n in dirs + files)]
    for path in paths if writable else reversed(paths):      # a sealed directory's contents first
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        mode = stat.S_IMODE(st.st_mode)
        os.chmod(path, mode | stat.S_IWUSR if writable else mode & ~0o222)


def _discard(entry: Path) -> None:
    """Remove an entry of ours that was (perhaps) already sealed."""
    try:
        _set_writable(entry, True)
    except OSError:
        pass
    shutil.rmtree(entry, ignore_errors=True)


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
        from ..scan.evidence import scan_links

        return scan_links(unpacked, self.modules, self.python, on_error=on_error)

    def _unreadable(self, what: Path, exc: BaseException) -> None:
        self._warn_once("read", f"cannot read the wheel cache entry {what} ({_why(exc)}), so it is compiled "
                        "again; a shared cache needs entries its users can read (umask 002 and a setgid, "
                        "group-writable cache directory)")

    def _root_guarded(self) -> bool:
        """Others may write the cache root only if it is sticky: else they could move a writer's
        directory aside and put their own under its name."""
        try:
            st = self.root.stat()
        except OSError:
            return True                 # no cache yet: nothing to guard
        if st.st_mode & _OTHERS_WRITE and not st.st_mode & stat.S_ISVTX:
            if st.st_uid == os.geteuid():
                try:                    # ours (envmod made it so before it made roots sticky)
                    os.chmod(self.root, stat.S_IMODE(st.st_mode) | stat.S_ISVTX)
                    return True
                except OSError:
                    pass
            self._warn_once("root", f"the wheel cache {self.root} is writable by others but not sticky, "
                            f"so they could replace each other's builds; it is not used (chmod +t {self.root})")
            return False
        return True

    def _entries(self, request: CacheRequest) -> list[Path]:
        """Every writer's entries for ``request``, the newest build first."""
        key = Path(request.package, request.version, request.key())
        entries = [entry for writer in self._listed(self.root) for entry in self._listed(writer / key)]
        return sorted(entries, key=lambda e: e.name, reverse=True)

    def _listed(self, directory: Path) -> list[Path]:
        try:
            return [e for e in directory.iterdir() if not e.name.startswith(".")]
        except PermissionError as exc:
            self._unreadable(directory, exc)
        except OSError:
            pass                        # missing, or not a directory: nothing there
        return []

    def lookup(self, request: CacheRequest) -> tuple[Path | None, str]:
        """A cached wheel valid against the modules loaded now, and why (not) one."""
        entries = self._entries(request) if self._root_guarded() else []
        if not entries:
            return None, "no cached build for these settings"
        for entry in entries:
            found = self._usable_entry(entry)
            if found is None:
                continue
            wheel, meta = found
            now = self._links_now(entry)
            if now is not None and now == meta["links"] and self._intact(entry, wheel, meta):
                return wheel, f"cached wheel built {meta.get('built', '?')} links the same central libraries"
        return None, "cached builds link other central libraries than the modules provide now"

    def _usable_entry(self, entry: Path) -> tuple[Path, dict] | None:
        """The wheel and metadata of a complete, readable entry only its writer could have
        changed; None for anything else (warning when it is unreadable or unguarded)."""
        try:
            meta = json.loads((entry / ENTRY_FILE).read_text())
            wheel = entry / meta["wheel"]
            if "links" not in meta or not wheel.is_file():
                return None
            with open(wheel, "rb"):         # readable, or pip fails on it later
                pass
        except PermissionError as exc:
            self._unreadable(entry, exc)
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None                         # half-written or damaged: a miss, not an error
        if not _guarded(entry):
            self._warn_once("unguarded", f"the wheel cache entry {entry} could have been changed by "
                            "another user than its writer (it or a directory above it is theirs or "
                            "writable by others), so it is not used")
            return None
        return wheel, meta

    def _links_now(self, entry: Path) -> list[list] | None:
        """The link identity of the entry's unpacked files as they resolve now; None when some
        file cannot be read (warned)."""
        denied: list[Exception] = []

        def on_error(path: str, exc: Exception) -> None:
            if isinstance(exc, PermissionError):
                denied.append(exc)

        now = link_identity(self._scan(entry / "unpacked", on_error))
        if denied:
            self._unreadable(entry, denied[0])
            return None
        return now

    def _intact(self, entry: Path, wheel: Path, meta: dict) -> bool:
        """The wheel is still the one its writer stored: its bytes hash to the recorded sha256.
        A wheel changed since (or an entry recording no hash) is never installed."""
        recorded = meta.get("sha256")
        try:
            actual = file_sha256(wheel)
        except OSError as exc:
            self._unreadable(entry, exc)
            return False
        if recorded == actual:
            return True
        if recorded is not None:
            self._warn_once(f"changed:{entry}", f"the wheel cache entry {entry} was changed after it was "
                            f"stored (its wheel's sha256 is {actual[:16]}..., its writer recorded "
                            f"{str(recorded)[:16]}...), so it is not used and the package is compiled again")
        return False

    def store(self, request: CacheRequest, wheel: Path, built: str) -> Path | None:
        """Put a freshly built wheel in the cache; never fails the create if the cache is
        unwritable (warns once and returns None)."""
        base = self.root / effective_user() / request.package / request.version / request.key()
        tmp: Path | None = None
        try:
            _writer_dirs(base, self.root)
            tmp = new_dir(base, ".new-")
            shutil.copyfile(wheel, tmp / wheel.name)        # a new file: 0666 less the umask
            with zipfile.ZipFile(tmp / wheel.name) as zf:
                zf.extractall(tmp / "unpacked")
            links = self._scan(tmp / "unpacked")
            meta = {"wheel": wheel.name, "sha256": file_sha256(tmp / wheel.name), "built": built,
                    "request": request.describe(), "links": link_identity(links)}
            (tmp / ENTRY_FILE).write_text(json.dumps(meta, indent=1))
            digest = hashlib.sha256(json.dumps(meta["links"]).encode()).hexdigest()[:16]
            final = base / f"{built.replace(':', '')}-{digest}"
            if final.exists():
                return final / wheel.name
            _set_writable(tmp, False)        # sealed before it is visible: never changed after
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
                _discard(tmp)
