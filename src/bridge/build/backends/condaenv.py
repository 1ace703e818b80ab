"""Conda environments as envmod envs, whichever engine (conda's CLI, py-rattler) does the work.

- The env's Python is the conda ``python`` package: added to the specs unless the user names
  it, pinned to the central Python's major.minor when a central Python module is loaded (so the
  env's module version and what is compiled in it match the site's Python), else left to the
  solver. A conda env needs no central Python module.
- Packages of the build-rule table (mpi4py, h5py) and every ``--with``/``-r`` package are
  installed by pip inside the env (the env's own Python), the rule packages compiled against the
  central MPI/HDF5 exactly as in a venv (the wheel cache included).
- The MPI rule: with a central MPI module loaded, its family and version select conda-forge's
  "use the system MPI" placeholder from the channel label ``mpi-external`` (never by build
  string: newer placeholders carry no ``external_``), put first in the channel order with the
  spec ``<label>::<family>=<version>`` (recorded as ``mpi_pin``). A solution that would still
  install an MPI package from anywhere else (a conda MPI with libraries of its own) is refused
  in one line naming the spec that drags it in, unless ``--allow-conda-mpi``.
- One solve per create: the engine's install solves, and what it linked is checked for a conda
  MPI before the env goes live (a refused build is deleted with nothing visible, as any failed
  build is). A separate dry run first would cost a second solve, conda's slowest step; only a
  failing install is solved again, to tell a conda MPI's conflict from any other.
- Conda writes the prefix into files, so an env is built where it will stay (``builds_in_place``:
  the store gives it its own build directory and links the env's name to it).
- A packed copy (``envmod pack``) is relocated as conda relocates a package (``relocate_copy``):
  text files naming the prefix rewritten, binaries padded with NULs, or refused when the
  node-local path is longer than the env's.
- ``etc/conda/activate.d/*.sh`` never run under ``module load``: they are run once at create, in
  a clean ``env -i bash`` with ``CONDA_PREFIX`` set as ``conda activate`` would, and the variables
  they set are recorded (``activate_env``) for the modulefile to set.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ...cache import JsonCache
from ...discover.pyinfo import PythonInfo
from ...discover.stack import CentralModule, CentralStack
from ...errors import BuildError, ConfigError, PlanError, UsageError
from ...store.record import CondaRecord
from ..environment_file import spec_name
from .base import Backend
from .conda_engine import CondaEngine, CondaPackage

if TYPE_CHECKING:
    from ...store.record import EnvRecord

MPI_LABEL = "mpi-external"
# conda package names of an MPI implementation (conda-forge's), by the module family they stand for
MPI_PACKAGES = {"openmpi": "openmpi", "mpich": "mpich", "mvapich": "mvapich", "mvapich2": "mvapich2",
                "impi": "impi_rt", "intel-mpi": "impi_rt", "intel-oneapi-mpi": "impi_rt", "msmpi": "msmpi"}
_CONDA_MPI_NAMES = frozenset(MPI_PACKAGES.values())
# What activate.d scripts may change that a module must not set wholesale (or that bash sets itself)
_NOT_CARRIED = frozenset({"PATH", "LD_LIBRARY_PATH", "PWD", "OLDPWD", "SHLVL", "_", "CONDA_PREFIX", "CONDA_DEFAULT_ENV"})


def check_conda_spec(spec: str, what: str = "conda spec") -> str:
    """``spec`` if conda can only read it as a package spec (or channel): never an option (a
    leading ``-``), never empty, nothing unprintable; else a one-line :class:`UsageError`."""
    text = spec.strip() if isinstance(spec, str) else ""
    if not text or text.startswith("-") or not text.isprintable():
        raise UsageError(f"{what} {spec!r} is not a package spec" if what == "conda spec" else
                         f"{what} {spec!r} is not a channel name or URL",
                         hint="a conda match spec such as 'numpy>=1.26' or 'conda-forge::numpy'")
    return text


def mpi_release(module_version: str | None) -> str | None:
    """The MPI's release in a module's version: Spack's ``4.1.4-d2lqwco`` (its hash) and a site's
    ``4.1.4-gcc12`` are release 4.1.4 to conda."""
    found = re.match(r"\d+(?:\.\d+)*", module_version or "")
    return found.group(0) if found else None


def label_channel(channels: Sequence[str]) -> str:
    """The channel of the external-MPI placeholders: one listed with the label, else the label of
    the first channel (conda-forge's layout: ``<channel>/label/mpi-external``)."""
    for channel in channels:
        if channel.rstrip("/").endswith(f"/label/{MPI_LABEL}"):
            return channel
    return f"{channels[0].rstrip('/')}/label/{MPI_LABEL}"


def conda_mpi(packages: Sequence[CondaPackage]) -> CondaPackage | None:
    """The first MPI package in ``packages`` that is not an external placeholder (by its channel label)."""
    return next((p for p in packages if p.name in _CONDA_MPI_NAMES
                 and not p.channel.rstrip("/").endswith(f"/label/{MPI_LABEL}")), None)


@dataclass
class Asked:
    """What the user asked and envmod added, unpinned: what a refusal of a conda MPI names, and
    what is solved again without the pin when the pinned install does not solve."""

    user: list[str] = field(default_factory=list)
    base: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    mpi: CentralModule | None = None


@dataclass
class CondaPlan:
    """What the engine will install: the specs and channels, the MPI pin, the solution."""

    specs: list[str]
    channels: list[str]
    mpi_pin: str | None
    solution: list[CondaPackage] = field(default_factory=list)


class CondaEnvBackend(Backend):
    """A conda environment made by a :class:`CondaEngine` (``make_engine``; conda's CLI here)."""

    name = "conda"
    builds_in_place = True
    needs_central_python = False

    def __init__(self, settings: Any = None, engine: CondaEngine | None = None) -> None:
        super().__init__(settings)
        self.engine = engine
        self.allow_conda_mpi = False
        self.plan: CondaPlan | None = None
        self.asked = Asked()
        self.record: CondaRecord | None = None
        self.engine_module: str | None = None

    # ---- the engine ----------------------------------------------------------------------
    def make_engine(self, stack: CentralStack, environ: Mapping[str, str]) -> CondaEngine:
        """The site's conda CLI; the rattler backend returns its own engine."""
        from .conda import CondaCliEngine, find_conda, providing_module

        exe = find_conda(getattr(self.settings, "conda", None), environ)
        facts_cache = JsonCache(getattr(self.settings, "cache_dir", None))     # where conda's facts are kept
        return CondaCliEngine(exe, providing_module(stack, exe), environ, facts_cache)

    def check(self) -> None:
        from .conda import find_conda

        if self.engine is None:
            find_conda(getattr(self.settings, "conda", None), os.environ)

    def python(self, prefix: Path) -> Path:
        return prefix / "bin" / "python"

    def relocate_copy(self, copy: Path, old: Path, new: Path) -> list[str]:
        """As conda relocates at install: text files rewritten, binaries padded with NULs when
        ``new`` is no longer than ``old`` (the files it cannot do are returned)."""
        from ...stage.relocate import relocate_conda_tree

        return relocate_conda_tree(copy, old, new)

    # ---- plan: specs, channels, the MPI rule, a dry run ------------------------------------
    def prepare(self, request: Any, stack: CentralStack, central_python: PythonInfo | None,
                environ: Mapping[str, str]) -> None:
        """Decide what to install (specs, channels, the MPI pin); the engine solves it at create,
        where a spec that does not resolve, an unreachable channel or a conda MPI fails the build
        before the env goes live."""
        engine = self.engine = self.engine or self.make_engine(stack, environ)
        self.engine_module = engine.describe().get("module")
        channels = list(request.conda_channels or getattr(self.settings, "conda_channels", None) or ())
        if not channels and hasattr(engine, "default_channels"):
            channels = list(engine.default_channels())
        if not channels:
            raise ConfigError(f"the {self.name} backend has no channels to install from",
                              hint="set 'conda_channels:' in the config, or give channels in an environment.yml")
        from ..environment_file import check_conda_spec as check_spec_and_channel

        # never an option (-c URL smuggled in a spec), never a channel beyond the env's (a::b, [channel=])
        user = [check_spec_and_channel(s, "conda spec", channels) for s in request.conda_specs]
        for channel in channels:
            check_conda_spec(channel, "conda channel")
        base = self._base_specs(user, central_python, bool(request.packages or request.requirement_files))
        self.allow_conda_mpi = bool(getattr(request, "allow_conda_mpi", False))
        self.plan = self._settle(engine, user, base, channels, stack.first("mpi"))

    @staticmethod
    def _base_specs(user: Sequence[str], central: PythonInfo | None, wants_pip: bool) -> list[str]:
        names = {spec_name(s) for s in user}
        base = []
        if "python" not in names:
            base.append(f"python={central.short_version}" if central else "python")
        if wants_pip and "pip" not in names:
            base.append("pip")
        return base

    def _settle(self, engine: CondaEngine, user: list[str], base: list[str], channels: list[str],
                mpi: CentralModule | None) -> CondaPlan:
        """The specs and channels to install, pinned to the central MPI's placeholder (unsolved)."""
        specs = [*base, *user]
        self.asked = Asked(list(user), list(base), list(channels), mpi)
        family = mpi.family.lower() if mpi else ""
        version = mpi_release(mpi.version) if mpi else None
        if mpi is None or family not in MPI_PACKAGES or not version:
            return CondaPlan(specs, channels, None)
        label = label_channel(channels)
        pin = f"{label}::{MPI_PACKAGES[family]}={version}"
        return CondaPlan([*specs, pin], [label, *(c for c in channels if c != label)], pin)

    def _install_checked(self, engine: CondaEngine, plan: CondaPlan, target: Path) -> CondaPlan:
        """Install ``plan`` at ``target`` (one solve); a conda MPI in what was linked, or behind an
        unsatisfiable pin, is refused in one line (the caller discards the build). The plan
        installed: ``plan``, or the unpinned one that --allow-conda-mpi accepts."""
        asked = self.asked
        try:
            plan.solution = engine.install(target, plan.specs, plan.channels)
        except PlanError as pinned_error:
            if plan.mpi_pin is None:
                raise
            # Unsatisfiable with the placeholder: is it a spec that needs a conda MPI?
            specs = [*asked.base, *asked.user]
            try:
                free = CondaPlan(specs, asked.channels, None, engine.solve(specs, asked.channels))
            except PlanError:
                raise pinned_error from None
            if conda_mpi(free.solution) is None:
                raise pinned_error from None
            self._refuse_conda_mpi(engine, free, asked.user, asked.base, asked.mpi)    # unless allowed
            free.solution = engine.install(target, free.specs, free.channels)
            return free
        return self._refuse_conda_mpi(engine, plan, asked.user, asked.base, asked.mpi)

    def _refuse_conda_mpi(self, engine: CondaEngine, plan: CondaPlan, user: Sequence[str], base: Sequence[str],
                          mpi: CentralModule | None) -> CondaPlan:
        found = conda_mpi(plan.solution)
        if found is None or self.allow_conda_mpi:
            return plan
        culprits = [s for s in user if spec_name(s) == found.name] or [
            s for s in user if _solves_quietly(engine, [*base, s], plan.channels, found.name)]
        central = f"the central {mpi.name}" if mpi else "a central MPI module"
        raise PlanError(f"conda spec {', '.join(repr(s) for s in culprits) or 'of this env'} would install conda's "
                        f"own MPI ({found.name} {found.version} {found.build} from {found.channel}) instead of "
                        f"using {central}", hint="drop it, or pass --allow-conda-mpi to accept a conda MPI knowingly; "
                        "nothing was created")

    # ---- create --------------------------------------------------------------------------
    def create(self, python: PythonInfo | None, target: Path, final: Path, env_name: str) -> None:
        if self.engine is None or self.plan is None:
            raise BuildError("the conda backend was not prepared (no plan)")
        if target != final:
            raise BuildError("a conda env is built where it stays; it cannot be moved after")
        plan = self.plan = self._install_checked(self.engine, self.plan, target)
        self.record = CondaRecord(engine=self.engine.describe(), channels=list(plan.channels),
                                  specs=list(plan.specs), packages=[p.as_dict() for p in plan.solution],
                                  mpi_pin=self.plan.mpi_pin, conda_mpi_allowed=self.allow_conda_mpi,
                                  activate_env=activate_variables(target))

    def extra_dependencies(self, stack: CentralStack) -> list[CentralModule]:
        """The loaded module that provides the engine: the env's module depends on it."""
        return [m for m in stack.modules if m.name == self.engine_module]

    def annotate(self, record: "EnvRecord") -> None:
        record.conda = self.record


def _solves_quietly(engine: CondaEngine, specs: Sequence[str], channels: Sequence[str], mpi_name: str) -> bool:
    """Whether ``specs`` alone bring a conda MPI called ``mpi_name`` (False when they do not solve)."""
    try:
        found = conda_mpi(engine.solve(specs, channels))
    except (PlanError, BuildError):
        return False
    return found is not None and found.name == mpi_name


def engine_for_record(conda: CondaRecord) -> CondaEngine | None:
    """An engine that can read the env a record describes (``installed()``), or None."""
    from .conda import CondaCliEngine

    if conda.engine.get("tool") == "rattler":
        from .rattler import RattlerEngine

        return RattlerEngine()       # installed() reads conda-meta: no rattler needed, nothing run
    exe = conda.engine.get("executable")
    if conda.engine.get("tool") in ("conda", "mamba", "micromamba") and exe and os.access(exe, os.X_OK):
        return CondaCliEngine(exe, conda.engine.get("module"))
    return None


_DUMP_ENV = "env -0"


def activate_variables(prefix: Path) -> dict[str, str]:
    """What the env's ``etc/conda/activate.d/*.sh`` scripts set: each run in a clean ``env -i bash``
    with ``CONDA_PREFIX`` and ``CONDA_DEFAULT_ENV`` set as ``conda activate`` sets them, and the
    environment after compared with the one before."""
    scripts = sorted((prefix / "etc" / "conda" / "activate.d").glob("*.sh"))
    if not scripts:
        return {}
    source = "".join(f'. "{_bash_quote(str(s))}" || exit 3\n' for s in scripts)
    before = _bash_environment(prefix, "")
    after = _bash_environment(prefix, source)
    return {k: v for k, v in sorted(after.items()) if k not in _NOT_CARRIED and before.get(k) != v}


def _bash_quote(text: str) -> str:
    return re.sub(r'([\\"$`])', r"\\\1", text)


def _bash_environment(prefix: Path, source: str) -> dict[str, str]:
    script = (f'export CONDA_PREFIX="{_bash_quote(str(prefix))}" CONDA_DEFAULT_ENV="{_bash_quote(str(prefix))}"\n'
              f"{source}{_DUMP_ENV}\n")
    proc = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", "HOME=/nonexistent", "bash", "--noprofile", "--norc",
                           "-c", script], capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    if proc.returncode != 0:
        last = (proc.stderr.decode(errors="replace").strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise BuildError(f"the env's activate.d scripts failed in a clean shell: {last}")
    pairs = (item.split(b"=", 1) for item in proc.stdout.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}
