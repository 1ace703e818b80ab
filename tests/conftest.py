"""Shared test helpers: the real central site built by ci/site.sh, and real module shells.

Tests that need the site skip with a reason when it is absent, unless ENVMOD_REQUIRE_SITE=1
(set by .ci/run), where a missing site is a failure: CI must never pass by skipping.
"""

from __future__ import annotations

import base64
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEMS = ("lmod", "envmodules")


def site_dir() -> Path:
    return Path(os.environ.get("ENVMOD_SITE", "/opt/envmod-site"))


def site_missing_reason() -> str | None:
    site = site_dir()
    needed = [site / "software/python/3.11.2/bin/python3", site / "modules/lua", site / "modules/tcl",
              site / "envmodules", REPO / "ci/modules.sh"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        return f"central test site not built ({', '.join(missing)} missing): run 'bash ci/site.sh'"
    return None


def require_site() -> None:
    reason = site_missing_reason()
    if reason:
        if os.environ.get("ENVMOD_REQUIRE_SITE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def envmod_command() -> str:
    exe = Path(sys.executable).with_name("envmod")
    return shlex.quote(str(exe)) if exe.exists() else f"{shlex.quote(sys.executable)} -m bridge"


@dataclass
class ShellResult:
    returncode: int
    stdout: str
    stderr: str
    snapshots: dict[str, dict[str, str]]

    def check(self) -> "ShellResult":
        assert self.returncode == 0, f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        return self


class ModuleShell:
    """Runs bash scripts with one real module system initialised (ci/modules.sh), as a user would.

    Inside a script, ``snap NAME`` records the whole environment at that point, and ``$ENVMOD``
    runs the envmod command under test.
    """

    def __init__(self, system: str, root: Path, cache: Path) -> None:
        self.system = system
        self.root = root
        self.cache = cache

    def run(self, script: str, timeout: float = 600, extra_env: dict | None = None) -> ShellResult:
        preamble = f"""
set -e
source {shlex.quote(str(REPO / 'ci/modules.sh'))}
{'use_lmod' if self.system == 'lmod' else 'use_envmodules'}
export ENVMOD_ROOT={shlex.quote(str(self.root))} XDG_CACHE_HOME={shlex.quote(str(self.cache))}
ENVMOD={envmod_command()}
snap() {{ printf '@@SNAP %s ' "$1"; env -0 | base64 -w0; echo; }}
"""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LMOD", "MODULE", "__LMOD", "_ModuleTable", "__MODULES"))
               and k not in ("LOADEDMODULES", "_LMFILES_", "VIRTUAL_ENV", "ENVMOD_ROOT")}
        env["ENVMOD_SITE"] = str(site_dir())
        env.update(extra_env or {})
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-c", preamble + script], capture_output=True,
                              text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        snapshots, lines = {}, []
        for line in proc.stdout.splitlines():
            if line.startswith("@@SNAP "):
                _, name, data = line.split(" ", 2)
                raw = base64.b64decode(data).decode(errors="replace")
                snapshots[name] = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
            else:
                lines.append(line)
        return ShellResult(proc.returncode, "\n".join(lines), proc.stderr, snapshots)

    def environment(self, script: str = "") -> dict[str, str]:
        """The environment after ``script`` (e.g. module loads), to run envmod directly in."""
        return self.run(script + "\nsnap env").check().snapshots["env"]


@pytest.fixture
def envmod_root(tmp_path: Path) -> Path:
    root = tmp_path / "envmod-root"
    root.mkdir()
    return root


@pytest.fixture(params=SYSTEMS)
def shell(request, tmp_path: Path, envmod_root: Path) -> ModuleShell:
    """A module shell for each real module system."""
    require_site()
    return ModuleShell(request.param, envmod_root, tmp_path / "cache")


@pytest.fixture
def lmod_shell(tmp_path: Path, envmod_root: Path) -> ModuleShell:
    require_site()
    return ModuleShell("lmod", envmod_root, tmp_path / "cache")


@pytest.fixture
def tcl_shell(tmp_path: Path, envmod_root: Path) -> ModuleShell:
    require_site()
    return ModuleShell("envmodules", envmod_root, tmp_path / "cache")
