"""The uv backend: ``uv venv`` over the central Python, ordinary packages installed by ``uv pip``.

- The env is ``uv venv --relocatable --system-site-packages``: the central site-packages stay
  visible, as in a venv, and nothing in it names the path it was made at (uv's activate scripts
  find the env from their own location), so it is made in staging and renamed into place like
  a venv. ``bin/pip`` is the same launcher of the central pip that the venv backend writes.
- What to install is still resolved by pip (``--dry-run``, see install.py): pip sees the central
  Python's packages as installed, uv does not (it reads neither the system site-packages nor
  ``PYTHONPATH`` when it resolves) and would put its own numpy, say, over the central one. uv
  then installs exactly pip's plan: each distribution from the very file pip chose, ``--no-deps``.
- The rule table's packages (mpi4py, h5py) never reach uv: they are compiled by the pip path of
  :class:`~bridge.build.install.PipInstaller` (or come from envmod's wheel cache, keyed by the
  libraries they link) and installed from that wheel. uv's cache is keyed by the sdist, not by the
  MPI it was built against, so uv is also told never to build nor download one of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from ...discover.pyinfo import PythonInfo
from ...errors import BuildError, ConfigError
from ..install import PipInstaller
from ..rules import SourceBuild
from .base import Backend
from .venv import write_pip_launchers

_HOW_TO_GET_UV = "install it with: pip install 'envmod[uv]' (into envmod's own environment), or set 'uv:' in the config"


def find_uv(configured: Path | None) -> str:
    """The uv to run: the config's ``uv:``, else the one beside envmod's own Python (installed
    with envmod, ``envmod[uv]``), else the first on ``PATH``."""
    if configured is not None:
        if not (configured.is_file() and os.access(configured, os.X_OK)):
            raise ConfigError(f"the uv backend needs uv, but 'uv:' in the config names {configured}, "
                              "which is not an executable file", hint=_HOW_TO_GET_UV)
        return str(configured)
    beside = Path(sys.executable).with_name("uv")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("uv")
    if found is None:
        raise ConfigError("the uv backend needs uv, which is neither beside envmod's Python nor on PATH",
                          hint=_HOW_TO_GET_UV)
    return found


def uv_environment() -> dict[str, str]:
    """uv never fetches a Python of its own: envs are made over the central one only."""
    env = dict(os.environ)
    env.update(UV_PYTHON_DOWNLOADS="never", PYTHONNOUSERSITE="1")
    return env


class UvBackend(Backend):
    name = "uv"

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self._uv: str | None = None

    @property
    def uv(self) -> str:
        if self._uv is None:
            self._uv = find_uv(getattr(self.settings, "uv", None))
        return self._uv

    def check(self) -> None:
        _ = self.uv

    def python(self, prefix: Path) -> Path:
        return prefix / "bin" / "python"

    def create(self, python: PythonInfo, target: Path, final: Path, env_name: str) -> None:
        # --no-config/--no-project: a uv.toml or pyproject.toml in the user's working directory
        # must not change how the env is made.
        command = [self.uv, "venv", "--quiet", "--no-config", "--no-project", "--relocatable",
                   "--system-site-packages", "--python", python.executable, "--prompt", env_name,
                   "--allow-existing", str(target)]
        proc = subprocess.run(command, capture_output=True, text=True, errors="replace", env=uv_environment(),
                              stdin=subprocess.DEVNULL, timeout=300)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise BuildError(f"uv venv over {python.executable} failed: {last}")
        if python.has_pip:
            write_pip_launchers(target / "bin", final, python.short_version)

    def installer(self, python: Path, *args: Any, **kwargs: Any) -> PipInstaller:
        return UvInstaller(self.uv, python, *args, **kwargs)


class UvInstaller(PipInstaller):
    """PipInstaller whose ordinary packages are installed by ``uv pip install``."""

    one_pass = False        # uv installs exactly the dry run's plan

    def __init__(self, uv: str, python: Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(python, *args, **kwargs)
        self.uv = uv

    def _install_rest(self, reqs: Sequence[str], rest: Sequence[str], builds: Sequence[SourceBuild],
                      wanted: Mapping[str, dict] | None = None) -> None:
        specs = [spec for name in rest for spec in uv_spec(wanted[name] if wanted else {}, name)]
        if not specs:
            return
        self.reporter.step("install", f"{', '.join(rest)} (uv)")
        union: dict[str, str] = {}
        for build in builds:
            union.update(build.env)
        # Neither built (uv's cache would keep a build made against whatever MPI is loaded) nor
        # a binary wheel: should a rule package ever reach uv, the install fails instead.
        never = [flag for name in sorted(self.rules) for flag in ("--no-binary", name, "--only-binary", name)]
        env = self._env(union)
        env.update({k: v for k, v in uv_environment().items() if k.startswith("UV_")})
        self.reporter.run([self.uv, "pip", "install", "--python", self.python, "--no-deps", *never, *specs],
                          label="install", env=env)


def uv_spec(item: Mapping[str, Any], name: str) -> list[str]:
    """uv's arguments for one distribution of pip's plan (its ``--report`` entry): the file, URL,
    directory or commit pip chose, so that uv installs exactly what pip resolved."""
    info = item.get("download_info") or {}
    url = info.get("url")
    if not url:
        raise BuildError(f"pip's plan does not say where {name} comes from; uv cannot install it")
    if (info.get("dir_info") or {}).get("editable"):
        return ["--editable", url]
    vcs = info.get("vcs_info")
    if vcs:
        return [f"{name} @ {vcs['vcs']}+{url}@{vcs['commit_id']}"]
    return [f"{name} @ {url}"]
