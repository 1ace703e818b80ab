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
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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


class WheelCache:
    def __init__(self, root: Path, modules: Sequence[CentralModule], python: str | None) -> None:
        self.root = root
        self.modules = list(modules)
        self.python = python

    def _scan(self, unpacked: Path) -> list[LinkEvidence]:
        from .evidence import scan_links

        return scan_links(unpacked, self.modules, self.python)

    def lookup(self, request: CacheRequest) -> tuple[Path | None, str]:
        """A cached wheel valid against the modules loaded now, and why (not) one."""
        base = self.root / request.package / request.version / request.key()
        entries = sorted(base.iterdir(), reverse=True) if base.is_dir() else []
        if not entries:
            return None, "no cached build for these settings"
        reason = "cached builds link other central libraries than the modules provide now"
        for entry in entries:
            try:
                meta = json.loads((entry / ENTRY_FILE).read_text())
            except (OSError, ValueError):
                continue
            wheel = entry / meta["wheel"]
            if not wheel.is_file():
                continue
            now = link_identity(self._scan(entry / "unpacked"))
            if now == meta["links"]:
                return wheel, f"cached wheel built {meta['built']} links the same central libraries"
        return None, reason

    def store(self, request: CacheRequest, wheel: Path, built: str) -> Path | None:
        """Put a freshly built wheel in the cache; never fails the create if the cache is unwritable."""
        base = self.root / request.package / request.version / request.key()
        try:
            base.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=base))
            shutil.copy2(wheel, tmp / wheel.name)
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(tmp / "unpacked")
            links = self._scan(tmp / "unpacked")
            meta = {"wheel": wheel.name, "built": built, "request": request.describe(),
                    "links": link_identity(links)}
            (tmp / ENTRY_FILE).write_text(json.dumps(meta, indent=1))
            digest = hashlib.sha256(json.dumps(meta["links"]).encode()).hexdigest()[:16]
            final = base / f"{built.replace(':', '')}-{digest}"
            if final.exists():
                shutil.rmtree(tmp, ignore_errors=True)
                return final / wheel.name
            os.rename(tmp, final)
            return final / wheel.name
        except OSError:
            return None
