"""Where envmod keeps things and which defaults apply.

Precedence, lowest first: built-in defaults, the site config (``/etc/envmod/config.yaml`` or
``$ENVMOD_SITE_CONFIG``), the user config (``~/.config/envmod/config.yaml`` or
``$ENVMOD_CONFIG``), the variables (``$ENVMOD_ROOT``, ``$ENVMOD_WHEEL_CACHE``,
``$ENVMOD_SPACK_TREES``), then command-line options.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

SITE_CONFIG = "/etc/envmod/config.yaml"
MODULE_TYPES = ("lmod", "tcl")
_KEYS = {"root", "module_type", "templates", "build_rules", "cache_dir", "wheel_cache", "spack_install_trees",
         "backend", "uv", "conda", "conda_channels"}


@dataclass(frozen=True)
class Settings:
    """The settings in effect: where things live and which defaults apply."""

    root: Path
    cache_dir: Path
    module_type: str | None = None
    templates: Path | None = None
    build_rules: tuple[Path, ...] = ()
    wheel_cache: Path | None = None    # None: <cache_dir>/wheels
    # Spack install trees (dirs holding .spack-db) whose modules users load without running Spack
    spack_install_trees: tuple[Path, ...] = ()
    backend: str | None = None         # the default backend of 'create' (None: venv)
    uv: Path | None = None             # the uv the uv backend runs (None: beside envmod's Python, or on PATH)
    conda: Path | None = None          # the conda of the conda backend (None: $CONDA_EXE/$MAMBA_EXE, or on PATH)
    conda_channels: tuple[str, ...] = ()   # the conda backend's channels (none: conda's own configured ones)
    sources: tuple[str, ...] = field(default=(), compare=False)

    @property
    def wheel_cache_dir(self) -> Path:
        """Wheels compiled against central libraries; a site may point a group at one shared dir."""
        return self.wheel_cache or self.cache_dir / "wheels"

    @property
    def envs_dir(self) -> Path:
        return self.root / "envs"

    @property
    def modules_dir(self) -> Path:
        return self.root / "modules"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def state_dir(self) -> Path:
        """Locks and staging: hidden, on the same file system as ``envs`` so renames are atomic."""
        return self.root / ".envmod"

    def with_root(self, root: str | os.PathLike) -> "Settings":
        return replace(self, root=Path(root).expanduser().absolute())


def _xdg(environ: Mapping[str, str], var: str, fallback: str) -> Path:
    value = environ.get(var)
    if value and os.path.isabs(value):
        return Path(value)
    return Path(environ.get("HOME") or os.path.expanduser("~")) / fallback


def _expand(value: Any, source: str, key: str, environ: Mapping[str, str]) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{source}: '{key}' must be a non-empty path")
    def var(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in environ:
            raise ConfigError(f"{source}: '{key}' names an unset variable ${name}: {value}")
        return environ[name]

    text = re.sub(r"\$\{(\w+)\}|\$(\w+)", var, value)
    if text == "~" or text.startswith("~/"):
        text = str(environ.get("HOME") or os.path.expanduser("~")) + text[1:]
    return Path(text).absolute()


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a config file; unknown keys are an error so typos don't pass silently."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}",
                          hint=f"known: {', '.join(sorted(_KEYS))}")
    return data


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    data_home = _xdg(environ, "XDG_DATA_HOME", ".local/share")
    cache_home = _xdg(environ, "XDG_CACHE_HOME", ".cache")
    config_home = _xdg(environ, "XDG_CONFIG_HOME", ".config")
    values: dict[str, Any] = {"root": data_home / "envmod", "cache_dir": cache_home / "envmod"}
    rules: list[Path] = []
    sources: list[str] = []

    site = Path(environ.get("ENVMOD_SITE_CONFIG") or SITE_CONFIG)
    user = Path(environ.get("ENVMOD_CONFIG") or config_home / "envmod" / "config.yaml")
    for path in (site, user):
        if environ.get("ENVMOD_SITE_CONFIG") and path == site and not path.is_file():
            raise ConfigError(f"ENVMOD_SITE_CONFIG names a missing file: {path}")
        if path.is_file():
            sources.append(str(path))
            _apply_config_file(path, values, rules, environ)
    _apply_variables(environ, values, sources)
    return Settings(build_rules=tuple(rules), sources=tuple(sources), **values)


def _apply_config_file(path: Path, values: dict[str, Any], rules: list[Path], environ: Mapping[str, str]) -> None:
    """Take the settings of one config file over ``values`` (its build rules add to ``rules``)."""
    data = read_config_file(path)
    for key in ("root", "cache_dir", "templates", "wheel_cache", "uv", "conda"):
        if key in data:
            values[key] = _expand(data[key], str(path), key, environ)
    if "build_rules" in data:
        rules.append(_expand(data["build_rules"], str(path), "build_rules", environ))
    if "module_type" in data:
        values["module_type"] = check_module_type(data["module_type"], str(path))
    if "backend" in data:
        from .build.backends import check_backend_name

        values["backend"] = check_backend_name(data["backend"], f"{path}: 'backend'")
    if "conda_channels" in data:
        channels = data["conda_channels"]
        if not isinstance(channels, list) or not all(isinstance(c, str) and c.strip() for c in channels):
            raise ConfigError(f"{path}: 'conda_channels' must be a list of channel names or URLs")
        values["conda_channels"] = tuple(c.strip() for c in channels)
    if "spack_install_trees" in data:
        trees = data["spack_install_trees"]
        if not isinstance(trees, list):
            raise ConfigError(f"{path}: 'spack_install_trees' must be a list of paths")
        values["spack_install_trees"] = tuple(_expand(t, str(path), "spack_install_trees", environ) for t in trees)


def _apply_variables(environ: Mapping[str, str], values: dict[str, Any], sources: list[str]) -> None:
    """Take the ENVMOD_* variables over the config files' ``values``."""
    if environ.get("ENVMOD_WHEEL_CACHE"):
        values["wheel_cache"] = _expand(environ["ENVMOD_WHEEL_CACHE"], "ENVMOD_WHEEL_CACHE", "wheel_cache", environ)
    if environ.get("ENVMOD_SPACK_TREES"):
        values["spack_install_trees"] = tuple(_expand(t, "ENVMOD_SPACK_TREES", "spack_install_trees", environ)
                                              for t in environ["ENVMOD_SPACK_TREES"].split(":") if t)
    if environ.get("ENVMOD_ROOT"):
        values["root"] = _expand(environ["ENVMOD_ROOT"], "ENVMOD_ROOT", "root", environ)
        sources.append("ENVMOD_ROOT")


# What a root may not hold, and why: the root ends up in #! lines and in the /bin/sh launchers
# pip writes for long or spaced paths (the python path in double quotes, not escaped), by pip
# itself and again whenever a user pip-installs into the env later; and on search paths.
_ROOT_CHARS = {
    "$": "the launchers pip writes into an env would expand it as shell code",
    "`": "the launchers pip writes into an env would run it as shell code",
    '"': "it would end the quoted path in the launchers pip writes into an env",
    "\\": "the launchers pip writes into an env would read it as an escape",
    ":": "search paths (PATH, MODULEPATH) cannot hold it",
    "!": "the env's activate.csh could not carry it (csh reads it as a history reference in any quotes)",
}
_TRIPLE_QUOTE = "'" * 3        # ends the Python string that hides those launchers' shell line
_ROOT_HINT = "choose another root: --root, $ENVMOD_ROOT or 'root:' in the config"


def check_root(root: Path) -> Path:
    """Return ``root`` if envmod can keep environments there, else raise :class:`ConfigError`
    naming the offending character (or file): every script in an env must start, and run
    nothing but the env's Python, whatever the root."""
    text = str(root)
    for char in text:
        reason = _ROOT_CHARS.get(char)
        if reason is None and not char.isprintable():
            reason = "scripts in an env could not start under it (of white space, only plain spaces are allowed)"
        if reason is not None:
            raise ConfigError(f"envmod root {text!r} contains {char!r}: {reason}", hint=_ROOT_HINT)
    if _TRIPLE_QUOTE in text:
        raise ConfigError(f"envmod root {text!r} contains {_TRIPLE_QUOTE}: the launchers pip writes into an env "
                          "could not start", hint=_ROOT_HINT)
    for parent in (root, *root.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise ConfigError(f"envmod root {text!r} is not a directory: {parent} is a file", hint=_ROOT_HINT)
            break
    return root


def check_module_type(value: Any, source: str = "--module-type") -> str:
    if value not in MODULE_TYPES:
        raise ConfigError(f"{source}: module type must be one of {', '.join(MODULE_TYPES)}, not {value!r}")
    return value
