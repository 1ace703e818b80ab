"""Modulefiles from an environment record: one writer, Lua (Lmod) and Tcl (Environment Modules).

As in EasyBuild's module generator, the two syntaxes share one interface; as in Spack's module
writers, the text is in templates (``modulefiles/env.lua.j2``, ``modulefiles/env.tcl.j2``) and
this module only computes what they show.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..frontends import command_for
from ..fsutil import atomic_write_text
from ..store.record import RECORD_FILE, EnvRecord
from .templating import TemplateFailure, render_template

# The Lmod family (and Tcl guard) every envmod env's module joins: one env loaded at a time.
FAMILY = "envmod"


@dataclass(frozen=True)
class ModuleSyntax:
    module_type: str      # as users say it: "lmod" or "tcl"
    template: str
    suffix: str


SYNTAXES = {
    "lmod": ModuleSyntax("lmod", "modulefiles/env.lua.j2", ".lua"),
    "tcl": ModuleSyntax("tcl", "modulefiles/env.tcl.j2", ""),
}
# The conflict block's text alone, for modules another tool writes (EasyBuild's UserEnv).
CONFLICT_TEMPLATES = {"lmod": "modulefiles/conflict.lua.j2", "tcl": "modulefiles/conflict.tcl.j2"}


def module_version(python_version: str) -> str:
    """The module's version part: the env's Python, e.g. ``py3.11``."""
    return "py" + ".".join(python_version.split(".")[:2])


def key_packages(record: EnvRecord, limit: int = 8) -> str:
    chosen = [p for p in record.packages if p.requested] or record.packages
    text = ", ".join(f"{p.name} {p.version}" for p in chosen[:limit])
    if len(chosen) > limit:
        text += f", and {len(chosen) - limit} more"
    return text or "none beyond the central Python's"


def module_context(record: EnvRecord, staged_prefix: str | None = None) -> dict[str, Any]:
    command = command_for(record)      # 'spack envmod' for an env made through Spack
    python = f"Python {record.python.version}" + (f" from {record.python.module}" if record.python.module else "")
    compiled = [f"{p.name} {p.version} (against {', '.join(p.built_against)})"
                for p in record.packages if p.install == "source"]
    whatis = [f"Name: {record.name}", f"Description: {record.description or 'envmod environment'}",
              f"Backend: {record.backend} over {python}", f"Packages: {key_packages(record)}",
              f"Record: {record.path}"]
    help_lines = [
        f"envmod environment {record.name}" + (f": {record.description}" if record.description else ""),
        "",
        f"  {record.backend} over {python}",
        f"  packages:   {key_packages(record)}",
        *([f"  compiled:   {'; '.join(compiled)}"] if compiled else []),
        f"  loads:      {', '.join(record.module.depends_on) or 'no central modules'}",
        f"  record:     {record.path}",
        "",
        f"  '{command} show {record.name}' describes it; '{command} check {record.name}' verifies it against the site.",
    ]
    prefix = record.prefix
    setenv = module_setenv(record.name, prefix)
    if record.conda is not None:
        setenv = conda_setenv(record.name, prefix, record.conda.activate_env)
    return {
        "name": record.name,
        "module_name": record.module.name,
        "command": command,
        "envmod_version": __version__,
        "whatis": whatis,
        "help": "\n".join(help_lines),
        "depends_on": list(record.module.depends_on),
        "extensions": module_extensions(record),
        "family": FAMILY,
        "setenv": setenv,
        "prepend_path": [("PATH", os.path.join(prefix, "bin"))],
        "staged": staged_context(record, staged_prefix) if staged_prefix else None,
    }


def staged_context(record: EnvRecord, staged_prefix: str) -> dict[str, Any]:
    """The same variables for the env's node-local copy (``envmod stage``), and the file whose
    presence on a node says that copy is there (its record: a mount point is empty until mounted,
    an unpacked copy is renamed into place whole). ``prefix_var`` names the copy at load time, so
    an unload takes the staged branch again. A conda env's activate.d values that name its
    prefix (recorded at its build path) name the copy instead."""
    setenv, prefix_var = module_setenv(record.name, staged_prefix), "VIRTUAL_ENV"
    if record.conda is not None:
        shared = {record.prefix, os.path.realpath(record.prefix)}
        carried = {k: _repoint(v, shared, staged_prefix) for k, v in record.conda.activate_env.items()}
        setenv, prefix_var = conda_setenv(record.name, staged_prefix, carried), "CONDA_PREFIX"
    return {"prefix": staged_prefix, "prefix_var": prefix_var, "marker": os.path.join(staged_prefix, RECORD_FILE),
            "setenv": setenv, "prepend_path": [("PATH", os.path.join(staged_prefix, "bin"))]}


def _repoint(value: str, prefixes: set[str], new: str) -> str:
    """``value`` with each of ``prefixes`` (as a whole path or a path's start) made ``new``."""
    for prefix in sorted(prefixes, key=len, reverse=True):
        value = re.sub(re.escape(prefix) + r"(?=/|$|:)", lambda _: new, value)
    return value


def module_extensions(record: EnvRecord) -> list[str]:
    """The env's packages as Lmod's ``extensions()`` names them (``h5py/3.16.0``), so that
    ``module spider h5py`` finds the env, as it finds a PythonBundle's extensions."""
    return [f"{p.name}/{p.version}" for p in record.packages]


def module_setenv(name: str, prefix: str) -> list[tuple[str, str]]:
    """The variables an env's module sets, whoever writes it (envmod's templates, EasyBuild's
    UserEnv): the venv, no user site (``~/.local`` would shadow the env's packages), and which
    env and record are loaded."""
    return [("VIRTUAL_ENV", prefix), ("PYTHONNOUSERSITE", "1"), ("ENVMOD_ENV", name),
            ("ENVMOD_RECORD", str(Path(prefix) / RECORD_FILE))]


def conda_setenv(name: str, prefix: str, activate_env: dict[str, str]) -> list[tuple[str, str]]:
    """A conda env's variables: what ``conda activate`` sets (``CONDA_PREFIX``,
    ``CONDA_DEFAULT_ENV``), what its activate.d scripts set (recorded at create: they never run
    under ``module load``), no user site, and envmod's own. Never ``LD_LIBRARY_PATH``: the env's
    libraries would shadow the system's (conda's libtcl breaks Tcl module tools)."""
    envmod = [(k, v) for k, v in module_setenv(name, prefix) if k != "VIRTUAL_ENV"]
    carried = [(k, v) for k, v in activate_env.items() if k not in {k for k, _ in envmod}]
    return [("CONDA_PREFIX", prefix), ("CONDA_DEFAULT_ENV", prefix), *carried, *envmod]


def render_conflict(module_type: str, name: str, site_templates: Path | None = None,
                    cache_dir: Path | None = None) -> str:
    """The text that keeps two envmod envs from loading together (the templates' ``conflict``
    block, a site's override of its file included), for a module another tool writes."""
    return _render(CONFLICT_TEMPLATES[module_type], {"family": FAMILY, "name": name},
                   f"the {module_type} conflict guard of {name!r}", site_templates, cache_dir)


def modulefile_path(modules_dir: Path, record: EnvRecord, module_type: str) -> Path:
    return modules_dir / (record.module.name + SYNTAXES[module_type].suffix)


def render_modulefile(record: EnvRecord, module_type: str, site_templates: Path | None = None,
                      cache_dir: Path | None = None, staged_prefix: str | None = None) -> str:
    """The modulefile's text; a broken template (a site's, or ours) is one `ConfigError` naming
    the template file and line. With ``staged_prefix`` (a packed image's node-local path), the
    module uses that copy where a job staged it."""
    return _render(SYNTAXES[module_type].template, module_context(record, staged_prefix),
                   f"the {module_type} modulefile of {record.name!r}", site_templates, cache_dir)


def _render(template: str, context: dict[str, Any], what: str, site_templates: Path | None,
            cache_dir: Path | None) -> str:
    try:
        return render_template(template, context, site_templates, cache_dir)
    except TemplateFailure as exc:
        raise exc.config_error(what, site_templates) from None


def write_modulefile(record: EnvRecord, module_type: str, modules_dir: Path,
                     site_templates: Path | None = None, cache_dir: Path | None = None,
                     staged_prefix: str | None = None) -> Path:
    """Render and put the modulefile in place atomically (temp file + rename)."""
    text = render_modulefile(record, module_type, site_templates, cache_dir, staged_prefix)
    target = modulefile_path(modules_dir, record, module_type)
    target.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(target, text, 0o644)
