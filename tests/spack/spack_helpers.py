"""Helpers for the Spack tier (fixtures in conftest.py): find a real Spack and the central Spack site, run ``spack envmod``
with the extension from this checkout, and run shells with a real module tool.

Spack is found through ``SPACK_ROOT`` (``$SPACK_ROOT/bin/spack``) or ``spack`` on PATH; the site
(what ci/spack-site.sh builds) through ``ENVMOD_SPACK_SITE`` (default /opt/envmod-spack-site),
whose config scopes are used unless ``SPACK_SYSTEM_CONFIG_PATH`` is set already. Tests that need
them skip with the reason, unless ``ENVMOD_REQUIRE_SPACK=1``, which makes a missing Spack a
failure (CI must not pass by skipping).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXTENSION = REPO / "spack-ext" / "spack-envmod"
HERE = Path(__file__).resolve().parent


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("ENVMOD_REQUIRE_SPACK") == "1":
        pytest.fail(reason + " (ENVMOD_REQUIRE_SPACK=1)")
    pytest.skip(reason)


def spack_site() -> Path:
    return Path(os.environ.get("ENVMOD_SPACK_SITE", "/opt/envmod-spack-site"))


@lru_cache(maxsize=None)
def find_spack() -> tuple[str | None, str]:
    """(the spack executable, or None, and why not)."""
    root = os.environ.get("SPACK_ROOT")
    if root:
        exe = Path(root) / "bin" / "spack"
        if exe.is_file():
            return str(exe), ""
        return None, f"SPACK_ROOT={root} has no bin/spack"
    exe = shutil.which("spack")
    if exe:
        return exe, ""
    return None, "no Spack: set SPACK_ROOT to a Spack 1.1 checkout or put 'spack' on PATH (see ci/spack-site.sh)"


def spack_environ(extra: dict | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LMOD", "MODULE", "__LMOD", "_ModuleTable", "__MODULES"))
           and k not in ("LOADEDMODULES", "_LMFILES_", "VIRTUAL_ENV", "ENVMOD_ROOT", "SPACK_ENV")}
    if "SPACK_SYSTEM_CONFIG_PATH" not in env and (spack_site() / "etc" / "spack").is_dir():
        site = spack_site()
        env.update(SPACK_SYSTEM_CONFIG_PATH=str(site / "etc/spack"), SPACK_USER_CONFIG_PATH=str(site / "user"),
                   SPACK_USER_CACHE_PATH=str(site / "cache"))
    env.update(extra or {})
    return env


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> "Result":
        assert self.returncode == 0, f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        return self


class Spack:
    """``spack`` with the envmod extension registered for one call (``-c config:extensions``) and
    envmod's root in a temporary directory."""

    def __init__(self, exe: str, root: Path, cache: Path, extension: Path = EXTENSION) -> None:
        self.exe = exe
        self.root = root
        self.cache = cache
        self.extension = extension

    def environ(self, extra: dict | None = None) -> dict[str, str]:
        return spack_environ({"ENVMOD_ROOT": str(self.root), "XDG_CACHE_HOME": str(self.cache), **(extra or {})})

    def argv(self, *args: str, scope: Path | None = None, env_dir: Path | None = None) -> list[str]:
        out = [self.exe, "-c", f"config:extensions:[{self.extension}]"]
        if scope is not None:
            out += ["-C", str(scope)]
        if env_dir is not None:
            out += ["-e", str(env_dir)]
        return out + list(args)

    def __call__(self, *args: str, scope: Path | None = None, env_dir: Path | None = None,
                 timeout: float = 1200, extra_env: dict | None = None) -> Result:
        proc = subprocess.run(self.argv(*args, scope=scope, env_dir=env_dir), capture_output=True, text=True,
                              timeout=timeout, env=self.environ(extra_env), stdin=subprocess.DEVNULL, cwd=str(self.root))
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def python(self, script: Path, *args: str) -> Result:
        """``spack python SCRIPT`` with the extension registered (see spack_probe.py)."""
        return self("python", str(script), *args)


@lru_cache(maxsize=None)
def site_facts(exe: str) -> dict:
    """Module roots and names of the live site, as Spack itself reports them (spack_probe.py)."""
    env = spack_environ()
    proc = subprocess.run([exe, "-c", f"config:extensions:[{EXTENSION}]", "python", str(HERE / "spack_probe.py"), "site"],
                          capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip()[-800:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def require_spack() -> str:
    exe, why = find_spack()
    if exe is None:
        _skip_or_fail(why)
    facts = site_facts(exe)
    if "error" in facts:
        _skip_or_fail(f"Spack at {exe} cannot describe the central site: {facts['error']}")
    missing = [r for r in ("python", "mpi", "hdf5") if not facts["specs"].get(r)]
    if missing:
        _skip_or_fail(f"the Spack site has no installed {', '.join(missing)} (run ci/spack-site.sh; site: {spack_site()})")
    return exe


def envmod_argv() -> list[str]:
    """The standalone envmod of this checkout."""
    exe = Path(sys.executable).with_name("envmod")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bridge"]


# ------------------------------------------------------------------------------- module shells


def lmod_init() -> str | None:
    for candidate in (os.environ.get("LMOD_INIT"), "/usr/share/lmod/lmod/init/bash"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def modulecmd_tcl() -> str | None:
    """Environment Modules' modulecmd.tcl (5.x): ENVMOD_MODULECMD_TCL, the unpacked copy the
    central sites use, or Debian's."""
    for candidate in (os.environ.get("ENVMOD_MODULECMD_TCL"),
                      "/opt/envmodules-5.2/usr/lib/x86_64-linux-gnu/modulecmd.tcl",
                      str(Path(os.environ.get("ENVMOD_SITE", "/opt/envmod-site")) / "envmodules/usr/lib/x86_64-linux-gnu/modulecmd.tcl"),
                      "/usr/lib/x86_64-linux-gnu/modulecmd.tcl"):
        if candidate and Path(candidate).is_file() and shutil.which("tclsh"):
            return candidate
    return None


def fresh_shell(system: str, script: str, timeout: float = 600, extra_env: dict | None = None) -> Result:
    """Run ``script`` in a fresh login-less bash with only ``system`` (lmod or envmodules)
    initialised: no module loaded, MODULEPATH empty, nothing of the caller's module state."""
    if system == "lmod":
        init = lmod_init()
        if init is None:
            pytest.skip("Lmod is not installed (no /usr/share/lmod/lmod/init/bash; set LMOD_INIT)")
        preamble = f"source {shlex.quote(init)}\nmodule purge\n"
    else:
        cmd = modulecmd_tcl()
        if cmd is None:
            pytest.skip("Environment Modules is not available (set ENVMOD_MODULECMD_TCL to its modulecmd.tcl)")
        preamble = (f"export MODULES_CMD={shlex.quote(cmd)}\n"
                    f'module() {{ eval "$(tclsh "$MODULES_CMD" bash "$@")"; }}\n')
    env = {"HOME": os.environ.get("HOME", "/tmp"), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "MODULEPATH": "", **(extra_env or {})}
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-c", "set -e\n" + preamble + "unset MODULEPATH\n" + script],
                          capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(proc.returncode, proc.stdout, proc.stderr)
