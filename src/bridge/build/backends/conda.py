"""The conda CLI as a :class:`~bridge.build.backends.conda_engine.CondaEngine`: the site's own conda.

Every call passes ``--json`` and reads conda's documented output: ``create -p PREFIX`` to
install (its ``actions.LINK``: what it linked, as ``list -p PREFIX`` gives it for a new env),
``create --dry-run`` for a solve alone (only to explain a failed install), ``list -p PREFIX``
for what an existing env holds, ``config --show channels solver`` for the site's defaults, and
on failure conda's JSON error (``exception_name``, ``message``), turned into one line.
What conda says of itself (its version, channels and solver) costs two runs of conda, a fifth of a
second at every create: it is kept in envmod's cache, keyed by everything that can change it (see
:func:`describe_key`). Channels are always given
explicitly with ``--override-channels``, so the user's ``~/.condarc`` never adds one.

Which conda: ``conda:`` in the config, else ``CONDA_EXE`` or ``MAMBA_EXE`` (set by a loaded module,
as sites' anaconda3/miniforge3 modules do), else ``conda`` on ``PATH``. The loaded module that
provides it is recorded and becomes a dependency of the env's module (an env depends on the conda
it was made with).

Tested with conda 26.7.1 (its classic solver). mamba and micromamba take the same flags for
everything used here (``create -p --override-channels -c --dry-run --json -y``, ``list -p
--json``) and are driven by the same code when ``MAMBA_EXE`` or ``conda:`` names them; that is
untested here (neither can be installed on the test machines).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from ...cache import JsonCache, file_stamp
from ...discover.stack import CentralStack
from ...errors import BuildError, ConfigError, PlanError
from .conda_engine import CondaPackage

_HOW_TO_GET_CONDA = "load the site's conda module, or set 'conda:' in the config"
# conda's errors about the request itself (a spec, a channel), as opposed to a failure of the tool
_REQUEST_ERRORS = ("PackagesNotFoundError", "PackagesNotFoundInChannelsError", "UnsatisfiableError",
                   "ResolvePackageNotFound", "UnavailableInvalidChannel", "CondaHTTPError",
                   "InvalidMatchSpec", "InvalidVersionSpec", "ChannelNotAllowed", "ChannelError")


def find_conda(configured: Path | None, environ: Mapping[str, str]) -> str:
    """The conda to run: the config's ``conda:``, else ``CONDA_EXE``/``MAMBA_EXE``, else ``PATH``."""
    if configured is not None:
        if not _is_executable(str(configured)):
            raise ConfigError(f"the conda backend needs conda, but 'conda:' in the config names {configured}, "
                              "which is not an executable file", hint=_HOW_TO_GET_CONDA)
        return str(configured)
    for var in ("CONDA_EXE", "MAMBA_EXE"):
        value = environ.get(var, "")
        if value and _is_executable(value):
            return value
    found = shutil.which("conda", path=environ.get("PATH", ""))
    if found is None:
        raise ConfigError("the conda backend needs conda, which is neither named by CONDA_EXE/MAMBA_EXE nor on PATH",
                          hint=_HOW_TO_GET_CONDA)
    return found


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def providing_module(stack: CentralStack, exe: str) -> str | None:
    """The loaded module that provides ``exe``: one whose ``PATH`` holds it, or one whose prefix
    (or the parent of a ``PATH`` entry, e.g. ``condabin/``'s) holds it."""
    real = os.path.realpath(exe)
    for module in stack.modules:
        entries = module.paths.get("PATH", ())
        roots = [module.prefix, *module.prefixes.values(), *(os.path.dirname(e.rstrip("/")) for e in entries)]
        if any(os.path.realpath(os.path.join(e, os.path.basename(exe))) == real for e in entries):
            return module.name
        if any(r and r not in ("/", "/usr", "/usr/local") and real.startswith(os.path.realpath(r) + os.sep)
               for r in roots):
            return module.name
    return None


class CondaCliEngine:
    """Solves and installs with the conda CLI (or mamba/micromamba through the same flags)."""

    name = "conda"

    def __init__(self, exe: str, module: str | None = None, environ: Mapping[str, str] | None = None,
                 cache: JsonCache | None = None) -> None:
        self.exe = exe
        self.module = module
        self.environ = dict(os.environ if environ is None else environ)
        self.cache = cache
        self._facts: dict[str, Any] | None = None
        self._described: dict[str, Any] | None = None

    # ---- running conda -----------------------------------------------------------------
    def _conda_environ(self) -> dict[str, str]:
        """The environment conda runs in: an activated env of the user's never matters."""
        env = {k: v for k, v in self.environ.items() if not k.startswith("CONDA_PREFIX")}
        env.pop("CONDA_DEFAULT_ENV", None)
        return env

    def _run(self, args: Sequence[str], what: str, timeout: float = 1800) -> Any:
        try:
            proc = subprocess.run([self.exe, *args, "--json"], capture_output=True, text=True, errors="replace",
                                  env=self._conda_environ(), stdin=subprocess.DEVNULL, timeout=timeout)
        except OSError as exc:
            raise ConfigError(f"cannot run conda {self.exe}: {exc.strerror}", hint=_HOW_TO_GET_CONDA) from None
        except subprocess.TimeoutExpired:
            raise BuildError(f"conda {what} did not finish in {timeout:.0f}s") from None
        data = _json_of(proc.stdout)
        report = data if isinstance(data, dict) else {}
        if proc.returncode != 0 or report.get("exception_name") or report.get("success") is False:
            raise self._error(what, report, proc)
        return data

    @staticmethod
    def _error(what: str, data: Mapping[str, Any], proc: subprocess.CompletedProcess) -> Exception:
        name = str(data.get("exception_name") or "")
        message = str(data.get("message") or data.get("error") or "").strip()
        if not message:
            message = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        # conda's messages run over many lines (advice about anaconda.org, ...); the first
        # lines, joined, say what went wrong, and name the specs or the channel.
        lines = [line.strip(" -") for line in message.splitlines() if line.strip()]
        summary = lines[0] if lines else name
        if data.get("packages"):
            summary = (f"not available from the channels ({', '.join(map(str, data.get('channel_urls') or []))}): "
                       + ", ".join(map(str, data["packages"])))
        if name in _REQUEST_ERRORS:      # the request itself, refused by the solve of whichever command ran it
            return PlanError(f"conda solve failed: {name}: {summary}", hint="nothing was created")
        return BuildError(f"conda {what} failed: {name + ': ' if name else ''}{summary}")

    # ---- CondaEngine ---------------------------------------------------------------------
    def _conda_facts(self) -> dict[str, Any]:
        """conda's version and its ``config --show channels solver``: from envmod's cache when
        nothing that could change them changed (a failed ``config`` is raised, never cached)."""
        if self._facts is None:
            key = describe_key(self.exe, self._conda_environ())
            if self.cache is None or key is None:
                self._facts = self._ask_conda()
            else:
                self._facts = self.cache.get_or_compute("conda", key, self._ask_conda, valid=_are_conda_facts)
        return self._facts

    def _ask_conda(self) -> dict[str, Any]:
        config = self._run(["config", "--show", "channels", "solver"], "config --show")
        return {"version": self._version(), "config": config if isinstance(config, dict) else {}}

    def _version(self) -> str | None:
        proc = subprocess.run([self.exe, "--version"], capture_output=True, text=True, errors="replace",
                              env=self._conda_environ(), stdin=subprocess.DEVNULL, timeout=120)
        words = (proc.stdout.strip() or proc.stderr.strip()).split()
        return words[-1] if words else None

    def default_channels(self) -> list[str]:
        """conda's own configured channels (the site's .condarc, and the user's)."""
        return [str(c) for c in self._conda_facts()["config"].get("channels") or []]

    def describe(self) -> dict[str, Any]:
        """Asked of conda once per engine, and kept in envmod's cache across creates."""
        if self._described is None:
            self._described = self._describe()
        return dict(self._described)

    def _describe(self) -> dict[str, Any]:
        try:
            facts = self._conda_facts()
            version, solver = facts["version"], facts["config"].get("solver")
        except (BuildError, PlanError):
            version, solver = self._version(), None     # a tool without 'config --show solver' (micromamba)
        return {"tool": os.path.basename(self.exe), "version": version,
                "executable": self.exe, "solver": solver, "module": self.module}

    def solve(self, specs: Sequence[str], channels: Sequence[str]) -> list[CondaPackage]:
        # A dry run writes nothing; its prefix must merely not be an existing env.
        prefix = os.path.join(tempfile.gettempdir(), f"envmod-solve-{os.getpid()}-{os.urandom(4).hex()}")
        data = self._run(["create", "-p", prefix, "--dry-run", *_channel_args(channels), *specs, "-y"], "solve")
        return [_package(item) for item in (data.get("actions") or {}).get("LINK", [])]

    def install(self, prefix: Path, specs: Sequence[str], channels: Sequence[str]) -> list[CondaPackage]:
        data = self._run(["create", "-p", str(prefix), *_channel_args(channels), *specs, "-y", "--quiet"], "create")
        return [_package(item) for item in (data.get("actions") or {}).get("LINK", [])]

    def installed(self, prefix: Path) -> list[CondaPackage]:
        """The env's conda packages; those pip installed (which conda lists as channel ``pypi``)
        are the record's Python packages, not conda's."""
        data = self._run(["list", "-p", str(prefix)], "list")
        return [_package(item) for item in data if isinstance(item, dict) and "pypi" not in
                (item.get("channel"), item.get("platform"))] if isinstance(data, list) else []


def _channel_args(channels: Sequence[str]) -> list[str]:
    return ["--override-channels", *(arg for channel in channels for arg in ("-c", channel))]


def _json_of(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return {}


def _package(item: Mapping[str, Any]) -> CondaPackage:
    """A package of ``conda list --json`` or of a dry run's ``actions.LINK``."""
    return CondaPackage(name=str(item["name"]), version=str(item["version"]),
                        build=str(item.get("build_string") or item.get("build") or ""),
                        channel=str(item.get("base_url") or item.get("channel") or ""),
                        subdir=str(item.get("platform") or item.get("subdir") or ""))


# ---- the cache key of conda's facts ----------------------------------------------------------
#: Where conda 26.7.1 reads its configuration, in its order (conda/base/constants.py SEARCH_PATH on
#: POSIX; documented as "Searching for .condarc"): a file, or a directory of *.yml/*.yaml files.
CONDARC_SEARCH_PATH = (
    "/etc/conda/.condarc", "/etc/conda/condarc", "/etc/conda/condarc.d/",
    "/var/lib/conda/.condarc", "/var/lib/conda/condarc", "/var/lib/conda/condarc.d/",
    "$CONDA_ROOT/.condarc", "$CONDA_ROOT/condarc", "$CONDA_ROOT/condarc.d/",
    "$XDG_CONFIG_HOME/conda/.condarc", "$XDG_CONFIG_HOME/conda/condarc", "$XDG_CONFIG_HOME/conda/condarc.d/",
    "~/.config/conda/.condarc", "~/.config/conda/condarc", "~/.config/conda/condarc.d/",
    "~/.conda/.condarc", "~/.conda/condarc", "~/.conda/condarc.d/",
    "~/.condarc",
    "$CONDA_PREFIX/.condarc", "$CONDA_PREFIX/condarc", "$CONDA_PREFIX/condarc.d/",
    "$CONDARC",
)
_CONFIG_SUFFIXES = (".yml", ".yaml")
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")     # conda expands $VAR, ${VAR} in .condarc values
_MAX_CONDARC = 1 << 20


def describe_key(exe: str, environ: Mapping[str, str]) -> list | None:
    """What can change conda's version, channels and solver: its executable (and the interpreter
    and installation it runs from), every configuration file it would read (present or not), the
    variables those files name, and every CONDA_*/MAMBA_* variable. None for a tool this was not
    worked out for (mamba, micromamba: always asked)."""
    if os.path.basename(exe) != "conda":
        return None
    real = os.path.realpath(exe)
    interpreter = _interpreter_of(real)
    # conda's CONDA_ROOT, unless set, is its interpreter's sys.prefix (a venv's own directory: the
    # #! path unresolved); with CONDA_PREFIX unset (see _conda_environ) $CONDA_PREFIX stands for
    # its root prefix, the same directory.
    roots = sorted({os.path.dirname(os.path.dirname(p)) for p in (interpreter, real) if p})
    files = [file_stamp(exe), file_stamp(real),
             *([file_stamp(interpreter), file_stamp(os.path.realpath(interpreter))] if interpreter else []),
             *(file_stamp(os.path.join(root, "conda-meta", "history")) for root in roots)]
    paths: dict[str, None] = {}       # in order, once each
    for root in roots:
        mapping = {**environ, "CONDA_PREFIX": root}
        mapping.setdefault("CONDA_ROOT", root)
        paths.update((path, None) for entry in CONDARC_SEARCH_PATH for path in _config_files(_expand(entry, mapping)))
    configs = [file_stamp(path) for path in paths]
    mentioned = {"HOME", "XDG_CONFIG_HOME"}.union(*(_variables_named_in(path) for path in paths))
    variables = sorted((k, v) for k, v in environ.items()
                       if k.startswith(("CONDA_", "MAMBA_", "_CONDA_")) or k in mentioned)
    return ["conda-describe-1", exe, files, configs, variables]


def _interpreter_of(exe: str) -> str | None:
    """The interpreter of a ``#!`` script (conda's entry point is one), else None."""
    try:
        with open(exe, "rb") as fh:
            first = fh.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if not words or not os.path.isabs(words[0]) or os.path.basename(words[0]) == "env":
        return None     # '/usr/bin/env python': the installation is then known by the script's own place
    return words[0]


def _expand(entry: str, mapping: Mapping[str, str]) -> str:
    """An entry of the search path as conda expands it: $VAR and ${VAR} from the environment
    (left as they are when unset), a leading ~ from HOME."""
    path = string.Template(entry).safe_substitute(mapping)
    if path == "~" or path.startswith("~/"):
        home = mapping.get("HOME") or os.path.expanduser("~")
        path = home + path[1:]
    return path


def _config_files(path: str) -> list[str]:
    """The path itself (whether it exists or not: a new file must change the key), and for a
    directory each config file in it."""
    if not path or "$" in path:
        return []     # a variable that is not set: conda skips it too
    found = [path]
    if os.path.isdir(path):
        try:
            found += sorted(e.path for e in os.scandir(path) if e.name.endswith(_CONFIG_SUFFIXES))
        except OSError:
            pass
    return found


def _variables_named_in(path: str) -> set[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return set(_VARIABLE.findall(fh.read(_MAX_CONDARC)))
    except OSError:      # absent, a directory, unreadable: its stamp says so
        return set()


def _are_conda_facts(value: Any) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("config"), dict)
            and isinstance(value.get("version"), (str, type(None))))
