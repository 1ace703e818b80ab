"""Let uv resolve a uv env's packages when that gives pip's answer (see UvInstaller).

pip's answer differs from uv's own in two ways, both closed here before uv may resolve:

- pip sees what the env's Python sees from outside the env (the central site-packages, every
  ``PYTHONPATH`` entry) as installed and keeps such a distribution when it satisfies (its
  only-if-needed strategy); uv reads neither. So uv resolves with a constraint pinning every such
  distribution to the version the env sees: it then keeps exactly what pip keeps, and a request
  pip would satisfy by installing another version fails to resolve (and pip's path takes over).
- pip takes where packages come from out of its configuration (pip.conf files, ``PIP_*``); uv
  reads neither. So uv may resolve only when pip's effective configuration for ``pip install``
  is fully translatable to uv's flags (:func:`uv_options`); anything else keeps pip's path.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path
from typing import Mapping, Sequence

from ...cache import JsonCache, file_stamp

#: Runs in the env's Python: the distributions it sees outside its own site-packages, name ->
#: version, the first of a name on sys.path winning (the one imported, the one pip sees), and the
#: directories it looked in.
_OUTSIDE_PROBE = r"""
import importlib.metadata, json, os, re, sys, sysconfig
own = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
paths = [p for p in sys.path if os.path.realpath(p or ".") not in own]
seen = {}
for dist in importlib.metadata.distributions(path=paths):
    name = dist.metadata["Name"]
    if name:
        seen.setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist.version)
print(json.dumps({"paths": [os.path.abspath(p or ".") for p in paths], "dists": seen}))
"""


def outside_distributions(python: str, env: Mapping[str, str], cache: JsonCache) -> dict[str, str] | None:
    """What the env's Python (run with pip's environment ``env``) sees installed outside the env,
    by canonical name; None when it cannot say. Kept in envmod's cache, keyed by the interpreter,
    ``PYTHONPATH`` and where it runs, and valid while every directory it looked in is unchanged
    (installing or removing a distribution, or a ``.pth`` file, changes its directory)."""
    key = ["outside-1", file_stamp(os.path.realpath(python)), env.get("PYTHONPATH"), os.getcwd()]

    def probe() -> dict | None:
        try:
            proc = subprocess.run([python, "-c", _OUTSIDE_PROBE], capture_output=True, text=True, env=dict(env),
                                  stdin=subprocess.DEVNULL, timeout=120)
            found = json.loads(proc.stdout) if proc.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, ValueError):
            return None
        if not (isinstance(found, dict) and isinstance(found.get("dists"), dict)):
            return None
        return {"dists": found["dists"], "stamps": [file_stamp(path) for path in found.get("paths", [])]}

    def fresh(value: object) -> bool:
        return isinstance(value, dict) and all(file_stamp(stamp[0]) == stamp for stamp in value["stamps"])

    value = cache.get_or_compute("outside-python", key, probe, valid=fresh)
    return value["dists"] if isinstance(value, dict) else None


# --- pip's configuration ------------------------------------------------------------------

#: Keys of pip's configuration that do not change what ``pip install`` resolves or from where.
_HARMLESS = {"disable-pip-version-check", "no-input", "no-color", "progress-bar", "quiet", "verbose",
             "root-user-action", "require-virtualenv", "no-python-version-warning", "log", "cache-dir",
             "no-cache-dir", "config-file"}
#: pip's sections that apply to ``pip install``, in pip's order of precedence (later wins).
_SECTIONS = ("global", "install", ":env:")
_TRUE, _FALSE = {"1", "true", "yes", "y", "on"}, {"0", "false", "no", "n", "off"}


def pip_config_files(environ: Mapping[str, str]) -> list[str]:
    """Every file pip reads its configuration from (pip/_internal/configuration.py, 22.3 and later),
    but the env's own ``sys.prefix/pip.conf``: that one's in a fresh env (see UvInstaller)."""
    home = os.path.expanduser("~") if "HOME" not in environ else environ["HOME"]
    dirs = [d for d in (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(os.pathsep) if d]
    user = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    files = [os.path.join(d, "pip", "pip.conf") for d in dirs] + ["/etc/pip.conf",
             os.path.join(home, ".pip", "pip.conf"), os.path.join(user, "pip", "pip.conf")]
    if environ.get("PIP_CONFIG_FILE"):
        files.append(environ["PIP_CONFIG_FILE"])
    return files


def pip_config(python: str, env: Mapping[str, str], cache: JsonCache, pip_version: str = "") -> dict[str, str] | None:
    """pip's configuration as pip itself lists it (``pip config list``: its files and ``PIP_*``),
    ``section.key -> value``; None when pip cannot say. Kept in envmod's cache, keyed by the
    interpreter (not the env's path: a new env's each time) and pip's version, every file pip
    would read (present or not) and every ``PIP_*`` variable, so a change to any is seen by the
    next create."""
    key = ["pip-config-1", file_stamp(os.path.realpath(python)), pip_version,
           [file_stamp(path) for path in pip_config_files(env)],
           sorted((k, v) for k, v in env.items() if k.startswith("PIP_"))]

    def ask() -> dict[str, str] | None:
        try:
            proc = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                  env=dict(env), stdin=subprocess.DEVNULL, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode != 0:
            return None
        values: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            name, equals, text = line.partition("=")
            try:
                value = ast.literal_eval(text) if equals else None     # pip prints key=%r
            except (ValueError, SyntaxError):
                return None
            if not isinstance(value, str):
                return None
            values[name] = value
        return values

    found = cache.get_or_compute("pip-config", key, ask, valid=lambda v: v is None or isinstance(v, dict))
    return found if isinstance(found, dict) else None


def effective_install_options(config: Mapping[str, str]) -> dict[str, str]:
    """What ``pip install`` takes from its configuration: the ``global``, ``install`` and
    environment (``:env:``) values, later ones winning, as pip's option parser does."""
    options: dict[str, str] = {}
    for section in _SECTIONS:
        for key, value in config.items():
            where, _, name = key.partition(".")
            if where == section:
                options[name] = value
    return options


def uv_options(options: Mapping[str, str], cwd: str | None = None) -> tuple[list[str], dict[str, str]] | None:
    """uv's flags and environment that say what pip's effective ``options`` say, or None when
    one of them has no exact translation (a trusted host, a proxy, pre-releases, binary choices,
    ...): then pip resolves."""
    # pip looks at every index (and find-links) and takes the best candidate; uv's default
    # strategy stops at the first index that has the package
    flags: list[str] = ["--index-strategy", "unsafe-best-match"]
    env: dict[str, str] = {}
    for name, value in options.items():
        if name in _HARMLESS:
            continue
        translated = _uv_option(name, value, cwd or os.getcwd())
        if translated is None:
            return None
        flags += translated[0]
        env.update(translated[1])
    return flags, env


def _uv_option(name: str, value: str, cwd: str) -> tuple[list[str], dict[str, str]] | None:
    """One setting of pip's as uv's flags and environment; None: no exact translation."""
    # pip splits the value of an option it may take many times at white space
    many = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links"}
    if name in many:
        return [arg for item in value.split() for arg in (many[name], item)], {}
    if name == "constraint":       # pip reads a relative path from where it runs
        return [arg for path in value.split() for arg in ("--constraint", os.path.join(cwd, path))], {}
    if name == "no-index" and value.lower() in _TRUE | _FALSE:
        return (["--no-index"] if value.lower() in _TRUE else []), {}
    if name == "cert" and os.path.isfile(value):
        return [], {"SSL_CERT_FILE": value}          # uv: a CA bundle used instead of its own
    if name in ("timeout", "default-timeout"):
        try:
            return [], {"UV_HTTP_TIMEOUT": str(max(1, round(float(value))))}
        except ValueError:
            return None
    return None


def pip_uv_options(python: str, env: Mapping[str, str], cache: JsonCache, prefix: Path,
                   pip_version: str = "") -> tuple[list[str], dict[str, str]] | str:
    """uv's flags and environment for pip's configuration, or why uv may not resolve."""
    if (prefix / "pip.conf").exists():
        return f"{prefix / 'pip.conf'} configures pip in this env"
    config = pip_config(python, env, cache, pip_version)
    if config is None:
        return "pip could not list its configuration"
    options = effective_install_options(config)
    translated = uv_options(options)
    if translated is None:
        cwd = os.getcwd()
        refused = sorted(n for n, v in options.items() if n not in _HARMLESS and _uv_option(n, v, cwd) is None)
        return f"pip's configuration has a setting uv cannot take: {', '.join(refused)}"
    return translated


def compiled_pins(text: str) -> list[tuple[str, str, bool]] | None:
    """``uv pip compile``'s output (``--no-header --annotation-style line``) as (name, version,
    requested) in its order; requested: a ``-r`` file (the user's request) named it. None for
    anything but ``name==version`` lines."""
    pins: list[tuple[str, str, bool]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spec, _, annotation = line.partition("#")
        name, equals, version = spec.strip().partition("==")
        if not equals or not name or not version or " " in version:
            return None
        via = annotation.strip().removeprefix("via").strip()
        pins.append((name.strip(), version.strip(), any(part.strip().startswith("-r ") for part in via.split(","))))
    return pins


def named_only(specs: Sequence[str], files: Sequence[Path]) -> bool:
    """Whether the request is named requirements only (no path, URL, editable or hash, which
    uv would record or fetch differently): ``specs`` and every line of ``files``, of the files
    they include (``-r``/``-c``) too."""
    from ...errors import UsageError
    from ..install import check_spec, requirement_file_lines

    if any(check_spec(spec, spec) is None for spec in specs):
        return False
    try:
        for _where, line in requirement_file_lines(files):
            if any(token.startswith("-") for token in line.split()) or check_spec(line, line) is None:
                return False
    except UsageError:      # a file or an include that cannot be read: pip's path says so
        return False
    return True
