"""Interrogate a Python interpreter once and remember the answer."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from ..cache import JsonCache, file_stamp
from ..errors import NoPython

# Runs inside the interrogated interpreter: stdlib only, any Python 3.
_PROBE = r"""
import json, sys, sysconfig, importlib.util, platform
print(json.dumps({
    "version": "%d.%d.%d" % sys.version_info[:3],
    "implementation": platform.python_implementation(),
    "executable": sys.executable,
    "prefix": sys.prefix,
    "base_prefix": getattr(sys, "base_prefix", sys.prefix),
    "platform": sysconfig.get_platform(),
    "soabi": sysconfig.get_config_var("SOABI") or "",
    "purelib": sysconfig.get_paths()["purelib"],
    "has_pip": importlib.util.find_spec("pip") is not None,
}))
"""


@dataclass(frozen=True)
class PythonInfo:
    """What an interpreter reports about itself (see ``_PROBE``)."""

    version: str
    implementation: str
    executable: str
    prefix: str
    base_prefix: str
    platform: str
    soabi: str
    purelib: str
    has_pip: bool

    @property
    def short_version(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @property
    def is_venv(self) -> bool:
        return self.prefix != self.base_prefix

    def to_json(self) -> dict:
        return asdict(self)


def interrogate(executable: str, cache: JsonCache | None = None) -> PythonInfo:
    """Facts about ``executable``; raises :class:`NoPython` if it is not a working Python."""
    if not os.path.isfile(executable) or not os.access(executable, os.X_OK):
        raise NoPython(f"Python interpreter not found or not executable: {executable}")

    def probe() -> dict:
        import subprocess  # a cached answer runs nothing

        try:
            proc = subprocess.run([executable, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NoPython(f"cannot run Python interpreter {executable}: {exc}") from exc
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise NoPython(f"{executable} is not a working Python: {last}")
        try:
            data = json.loads(proc.stdout)
            PythonInfo(**data)
        except (ValueError, TypeError):
            raise NoPython(f"{executable} did not answer like a Python interpreter") from None
        return data

    key = ["pyinfo-1", file_stamp(executable), file_stamp(os.path.realpath(executable))]
    data = (cache or JsonCache(None)).get_or_compute("python", key, probe)
    return PythonInfo(**data)
