"""``envmod create NAME -f environment.yml``: conda's own environment file, read into a request.

conda's format (``conda env create -f``) is a mapping of:

* ``name``: ignored: the env's name is the one on the command line (the caller says so);
* ``prefix``: ignored the same way (``conda env export`` writes it): envmod places its envs;
* ``channels``: conda channels in priority order (``nodefaults`` is dropped: envmod never uses
  conda's default channels unless a file names them);
* ``dependencies``: conda specs (``numpy=1.26``, ``conda-forge::numpy``), and at most one
  mapping ``{pip: [...]}`` of pip requirements;
* ``variables``: refused: they would be set by ``conda activate``, which a module never runs.

Every conda spec and channel is checked to be a spec or a channel and never an option of conda's
command line (``--override-channels``, ``-c URL``); a spec's ``channel::`` must name one of the
file's channels. Every pip requirement goes through the same check as ``--with`` (never a pip
option). Anything else is one line naming the file and what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import UsageError

#: keys of an environment file that envmod reads, and those it reads and ignores (saying so)
_KNOWN_KEYS = {"name", "prefix", "channels", "dependencies", "variables"}
_IGNORED_KEYS = ("name", "prefix")
#: conda's "none of the default channels" marker: envmod uses only the channels named anyway
_NO_DEFAULTS = "nodefaults"
#: the conda packages a venv or uv env takes from the central Python instead: a pip-only file
#: (``python`` and ``pip`` beside a ``pip:`` section) fits every backend
_CENTRAL_ONLY = {"python", "pip"}
CONDA_BACKENDS = ("conda", "rattler")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: bracket keys of a conda MatchSpec that would fetch from somewhere the channels do not name
_WHERE_KEYS = re.compile(r"[\[,]\s*(channel|url)\s*=", re.IGNORECASE)
_SPEC_NAME = re.compile(r"^(?:[^:]*::)?\s*([A-Za-z0-9_][A-Za-z0-9_.+-]*)")


@dataclass
class EnvironmentFile:
    """An environment file read and checked: conda specs, channels and pip requirements."""

    path: Path
    conda_specs: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    pip_requirements: list[str] = field(default_factory=list)
    #: keys the file sets that envmod ignores, with their values (the caller tells the user)
    ignored: dict[str, str] = field(default_factory=dict)

    def conda_specs_for(self, backend: str) -> list[str]:
        """The conda specs a ``backend`` env gets from this file: all of them for conda and
        rattler; none for venv and uv, which refuse a file that needs conda packages."""
        if backend in CONDA_BACKENDS:
            return list(self.conda_specs)
        conda_only = [s for s in self.conda_specs if spec_name(s) not in _CENTRAL_ONLY or spec_name(s) != s.strip()]
        if conda_only:
            raise UsageError(f"{self.path} asks for conda packages ({', '.join(conda_only)}); a {backend} env "
                             "installs pip packages only",
                             hint="use --backend conda or rattler, or keep only a 'pip:' section (with bare "
                                  "'python' and 'pip': the central Python is used)")
        return []


def spec_name(spec: str) -> str:
    """The package name of a conda match spec (``python=3.11``, ``conda-forge::numpy>=1.2`` ->
    ``numpy``; a channel URL before ``::`` holds ``:`` too, so the name is read after the last)."""
    match = _SPEC_NAME.match(spec.rsplit("::", 1)[-1].strip())
    return match.group(1).lower() if match else spec.strip().lower()


def check_conda_spec(text: Any, where: str, channels: Sequence[str] = ()) -> str:
    """One conda spec, as conda's command line will take it: never an option (``-c URL``,
    ``--override-channels``), never a line break, and never a channel beyond ``channels`` (a
    ``channel::`` prefix or a ``[channel=...]``/``[url=...]`` key naming another)."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"{where}: {text!r} is not a conda package spec")
    spec = text.strip()
    if _CONTROL.search(spec):
        raise UsageError(f"{where}: conda spec {text!r} holds a control character")
    if spec.startswith("-") or re.search(r"\s-", spec):
        raise UsageError(f"{where}: {text!r} is a conda option, not a package spec; envmod passes no options to conda",
                         hint="a spec is NAME, NAME=VERSION or NAME=VERSION=BUILD; channels go in 'channels:'")
    if _WHERE_KEYS.search(spec):
        raise UsageError(f"{where}: conda spec {text!r} names where to fetch it from",
                         hint="list the channel under 'channels:' instead")
    channel, sep, _ = spec.rpartition("::")
    if sep and channel not in channels and not any(_same_channel(channel, c) for c in channels):
        raise UsageError(f"{where}: conda spec {text!r} takes it from channel {channel!r}, which is not one of "
                         f"the channels ({', '.join(channels) or 'none given'})",
                         hint="add the channel under 'channels:' if you mean it")
    return spec


def _same_channel(name: str, channel: str) -> bool:
    """``conda-forge`` names ``https://host/conda-forge`` and ``conda-forge/label/x`` alike."""
    return channel.rstrip("/").endswith("/" + name) or channel.split("/label/")[0] == name


def check_channel(text: Any, where: str, base: Path | None = None) -> str:
    """One channel: a name (``conda-forge``, ``conda-forge/label/mpi-external``), a URL or a
    local path (made absolute against ``base``, the file's directory, as conda reads it)."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"{where}: {text!r} is not a channel")
    channel = text.strip()
    if _CONTROL.search(channel) or any(ch.isspace() for ch in channel):
        raise UsageError(f"{where}: channel {text!r} holds white space or a control character")
    if channel.startswith("-"):
        raise UsageError(f"{where}: {text!r} is a conda option, not a channel; envmod passes no options to conda")
    if base is not None and not _SCHEME.match(channel) and channel.startswith(("./", "../", "~")):
        channel = str((base / Path(channel).expanduser()).resolve())
    return channel


def read_environment_file(path: Path | str) -> EnvironmentFile:
    """The environment file at ``path``, checked (see the module's description)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read environment file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"environment file {path} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"environment file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"environment file {path} is not a mapping of name, channels and dependencies")
    unknown = sorted(str(k) for k in data if k not in _KNOWN_KEYS)
    if unknown:
        raise UsageError(f"environment file {path}: unknown key {unknown[0]!r}",
                         hint="envmod reads name, channels and dependencies (with a 'pip:' section)")
    if data.get("variables"):
        raise UsageError(f"environment file {path}: 'variables' are set by 'conda activate', which a module never "
                         "runs; envmod does not carry them",
                         hint="remove them, and set them in your job script or a module of your own")
    result = EnvironmentFile(path=path)
    result.ignored = {k: str(data[k]) for k in _IGNORED_KEYS if data.get(k) is not None}
    result.channels = _read_channels(path, data.get("channels"))
    _read_dependencies(path, data.get("dependencies"), result)
    if not (result.conda_specs or result.pip_requirements):
        raise UsageError(f"environment file {path} lists no dependencies")
    return result


def _read_channels(path: Path, channels: Any) -> list[str]:
    if channels is None:
        return []
    if not isinstance(channels, list):
        raise UsageError(f"environment file {path}: 'channels' must be a list, not {type(channels).__name__}")
    out: list[str] = []
    for i, text in enumerate(channels, 1):
        channel = check_channel(text, f"{path} channel {i}", base=path.parent)
        if channel != _NO_DEFAULTS and channel not in out:
            out.append(channel)
    return out


def _read_dependencies(path: Path, dependencies: Any, result: EnvironmentFile) -> None:
    if dependencies is None:
        return
    if not isinstance(dependencies, list):
        raise UsageError(f"environment file {path}: 'dependencies' must be a list, not {type(dependencies).__name__}")
    pip_sections = 0
    for i, item in enumerate(dependencies, 1):
        where = f"{path} dependency {i}"
        if isinstance(item, dict):
            if set(item) != {"pip"}:
                raise UsageError(f"{where}: a mapping in 'dependencies' may only be 'pip:', not "
                                 f"{', '.join(repr(str(k)) for k in item)}")
            pip_sections += 1
            if pip_sections > 1:
                raise UsageError(f"{where}: a second 'pip:' section", hint="list every pip requirement in one")
            result.pip_requirements = _read_pip(path, item["pip"], where)
        else:
            result.conda_specs.append(check_conda_spec(item, where, result.channels))


def _read_pip(path: Path, requirements: Any, where: str) -> list[str]:
    """The ``pip:`` section: each a requirement, a path (relative to the file, as conda reads
    it: made absolute here) or a URL; never a pip option (``-r``, ``--index-url``, ``-e``)."""
    from .install import check_spec

    if not isinstance(requirements, list):
        raise UsageError(f"{where}: 'pip' must be a list of requirements, not {type(requirements).__name__}")
    out: list[str] = []
    for j, text in enumerate(requirements, 1):
        if not isinstance(text, str):
            raise UsageError(f"{where} pip entry {j}: {text!r} is not a requirement")
        local = path.parent / text
        if text.strip() and not text.lstrip().startswith("-") and not _SCHEME.match(text) and local.exists():
            text = str(local.resolve())     # conda runs pip in the file's directory
        check_spec(text, f"{where} pip entry {j} {text!r}")
        out.append(text)
    return out
