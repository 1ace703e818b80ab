"""The uv backend: ``uv venv`` over the central Python, ordinary packages installed by ``uv pip``.

- The env is ``uv venv --relocatable --system-site-packages``: the central site-packages stay
  visible, as in a venv, and nothing in it names the path it was made at (uv's activate scripts
  find the env from their own location), so it is made in staging and renamed into place like
  a venv. ``bin/pip`` is the same launcher of the central pip that the venv backend writes.
- uv resolves when that gives pip's answer (see uv_resolve.py): pip sees the central Python's
  packages as installed, uv does not (it reads neither the system site-packages nor
  ``PYTHONPATH`` when it resolves) and would put its own numpy, say, over the central one, so
  uv's resolution is constrained to every version the env sees from outside, and uv runs only
  when pip's configuration translates to uv's flags. Anything else (a rule package needed, a
  path or URL requested, an untranslatable pip setting, a resolution that needs another
  version of a central package, a package without a wheel) and pip resolves (``--dry-run``, see
  install.py); uv then installs exactly pip's plan: each distribution from the very file pip
  chose, ``--no-deps``.
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

from ...cache import JsonCache
from ...discover.pyinfo import PythonInfo
from ...errors import BuildError, ConfigError, EnvmodError
from ...scan.evidence import env_site_packages
from ..install import UNRESOLVABLE, Installed, InstallResult, PipInstaller
from ..rules import SourceBuild, canonical_name
from .base import Backend
from .uv_resolve import compiled_pins, named_only, outside_distributions, pip_uv_options
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
        return UvInstaller(self.uv, python, *args, config_cache=JsonCache(getattr(self.settings, "cache_dir", None)),
                           **kwargs)


class UvInstaller(PipInstaller):
    """PipInstaller whose ordinary packages are installed by ``uv pip install``."""

    one_pass = False        # uv resolves itself, or installs exactly the dry run's plan

    def __init__(self, uv: str, python: Path, *args: Any, config_cache: JsonCache | None = None,
                 **kwargs: Any) -> None:
        super().__init__(python, *args, **kwargs)
        self.uv = uv
        self.config_cache = config_cache or JsonCache(None)

    def _install(self, requirements: Sequence[str], requirement_files: Sequence[Path]) -> InstallResult:
        resolved = self._install_resolved_by_uv(requirements, requirement_files)
        return resolved if resolved is not None else super()._install(requirements, requirement_files)

    def _install_resolved_by_uv(self, requirements: Sequence[str], files: Sequence[Path]) -> InstallResult | None:
        """Resolve with ``uv pip compile`` and install its pins with uv, when that gives pip's
        answer (uv_resolve.py); None (pip's path) when it may not or did not."""
        if not (requirements or files) or self.names_a_rule_package(requirements):
            return None
        planned = self._uv_plan(requirements, files)
        if isinstance(planned, str):
            self._pip_resolves(planned)
            return None
        plan, flags, env = planned
        if not plan:
            self.reporter.step("resolve", "everything requested is already provided")
            return InstallResult()
        return self._install_uv_plan(plan, flags, env)

    def _uv_plan(self, requirements: Sequence[str], files: Sequence[Path]
                 ) -> tuple[list[tuple[str, str, bool]], list[str], dict[str, str]] | str:
        """uv's plan (name, version, requested; what the env sees from outside left out), uv's
        flags and environment; or why pip resolves instead."""
        if not named_only(requirements, files):
            return "a package is a path, a URL, an editable or hashed"
        pip_env = self._env(find_links=False)
        outside = outside_distributions(self.python, pip_env, self.config_cache)
        if outside is None:
            return "the env's Python could not list the packages it sees"
        translated = pip_uv_options(self.python, pip_env, self.config_cache, Path(self.python).parent.parent,
                                    outside.get("pip", ""))
        if isinstance(translated, str):
            return translated
        flags, extra = translated
        env = self._uv_env(extra)
        pins = self._uv_compile(requirements, files, flags, outside, env)
        if pins is None:
            return "uv could not resolve it with the central packages kept"
        return [pin for pin in pins if canonical_name(pin[0]) not in outside], flags, env

    def _install_uv_plan(self, plan: Sequence[tuple[str, str, bool]], flags: Sequence[str],
                         env: Mapping[str, str]) -> InstallResult | None:
        """Install uv's plan with uv, wheels only. Like pip's one pass, silent on the terminal
        until uv has resolved the pins: a failure before that leaves the env as it was and pip's
        path takes over (None); one after that is the install's own, raised."""
        announced: list[str] = []

        def announce(line: str) -> bool:
            if not line.startswith("Resolved "):
                return False
            announced.append(line)
            self.reporter.step("resolve", ", ".join(f"{name} {version}" for name, version, _ in plan) + " (uv)")
            self.reporter.step("install", ", ".join(name for name, _, _ in plan) + " (uv)")
            return True

        before = self._installed_files()
        try:
            # wheels only: what pip would build from an sdist, pip's path builds
            self.reporter.run([self.uv, "pip", "install", "--no-config", "--python", self.python, "--no-deps",
                               "--only-binary", ":all:", *self._never_rule_packages(), *flags,
                               *(f"{name}=={version}" for name, version, _ in plan)],
                              label="install", env=env, silent_until=announce)
        except EnvmodError:
            if announced and self._installed_files() != before:
                raise
            self._pip_resolves("uv could not install every package of its plan from a wheel")
            return None
        return InstallResult(packages=self._installed_by_uv(plan))

    def _never_rule_packages(self) -> list[str]:
        """uv's flags that a rule package is neither built (uv's cache would keep a build made
        against whatever MPI is loaded) nor taken from a binary wheel: should one ever reach uv,
        the install fails instead."""
        return [flag for name in sorted(self.rules) for flag in ("--no-binary", name, "--only-binary", name)]

    def _pip_resolves(self, why: str) -> None:
        self.reporter.note(f"(uv does not resolve this install: {why}; pip resolves)")

    def _uv_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        """uv's environment for its own resolution: pip's (temporary files in the scratch
        directory), none of the user's ``UV_*`` settings but where uv keeps its cache (they could
        change what uv resolves, or from where), and ``extra`` (pip's settings for uv)."""
        env = {k: v for k, v in self._env(find_links=False).items() if not k.startswith("UV_") or k == "UV_CACHE_DIR"}
        env.update(UV_PYTHON_DOWNLOADS="never", **extra)
        return env

    def _uv_compile(self, requirements: Sequence[str], files: Sequence[Path], flags: Sequence[str],
                 outside: Mapping[str, str], env: Mapping[str, str]) -> list[tuple[str, str, bool]] | None:
        """``uv pip compile`` of the request, every distribution seen from outside the env pinned
        to its version and every other rule package to one no release has; its pins, or None."""
        with self._temporary_dir("envmod-uv-") as tmp:
            request, constraints, output = (os.path.join(tmp, n) for n in ("request.in", "kept.txt", "resolved.txt"))
            with open(request, "w", encoding="utf-8") as fh:
                fh.writelines(f"{text}\n" for text in requirements)
            with open(constraints, "w", encoding="utf-8") as fh:
                fh.writelines(f"{name}=={version}\n" for name, version in sorted(outside.items()))
                fh.writelines(f"{name}=={UNRESOLVABLE}\n" for name in sorted(self.rules) if name not in outside)
            try:
                # The central interpreter, not the env's: the same markers and tags, and uv knows it
                # already (a new env's interpreter costs uv a query of 40 ms).
                self.reporter.run([self.uv, "pip", "compile", "--no-config", "--python", self.python_info.executable,
                                   "--no-header",
                                   "--annotation-style", "line", "--output-file", output, *flags,
                                   "--constraint", constraints, request, *map(str, files)],
                                  label="resolve", env=env, silent_until=lambda _line: False)
                with open(output, encoding="utf-8") as fh:
                    return compiled_pins(fh.read())
            except (EnvmodError, OSError):
                return None

    def _installed_by_uv(self, plan: Sequence[tuple[str, str, bool]]) -> list[Installed]:
        """The record's packages: each distribution of the plan as installed (its own spelling
        of its name), every one from a wheel (uv installed wheels only)."""
        from importlib.metadata import distributions

        prefix = Path(self.python).parent.parent
        found = {canonical_name(d.metadata["Name"]): (d.metadata["Name"], d.version)
                 for d in distributions(path=env_site_packages(prefix)) if d.metadata["Name"]}
        packages = []
        for name, version, requested in plan:
            real = found.get(canonical_name(name))
            if real is None or not same_version(real[1], version):
                raise BuildError(f"uv reported {name} {version} installed, but the env holds "
                                 + (f"{real[0]} {real[1]}" if real else f"no {name}"))
            packages.append(Installed(name=real[0], version=real[1], from_wheel=True, requested=requested))
        return packages

    def _install_rest(self, reqs: Sequence[str], rest: Sequence[str], builds: Sequence[SourceBuild],
                      wanted: Mapping[str, dict] | None = None) -> None:
        specs = [spec for name in rest for spec in uv_spec(wanted[name] if wanted else {}, name)]
        if not specs:
            return
        self.reporter.step("install", f"{', '.join(rest)} (uv)")
        union: dict[str, str] = {}
        for build in builds:
            union.update(build.env)
        env = self._env(union)
        env.update({k: v for k, v in uv_environment().items() if k.startswith("UV_")})
        self.reporter.run([self.uv, "pip", "install", "--python", self.python, "--no-deps",
                           *self._never_rule_packages(), *specs],
                          label="install", env=env)


def same_version(a: str, b: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


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
