"""What loading a module does to the environment, learnt from the module tool itself.

``envmod export --format bash|csh|fish`` writes a script that needs no module system. Rather than
re-implement Lmod or Environment Modules (dependencies, families, path de-duplication, ...), the
real tool loads the module in a clean, purged environment and the environment is compared before
and after. A variable the load changed is then classified by the tool's own behaviour:

* one that existed and still holds its old value as a run of ``:``-separated entries was
  prepended and/or appended to;
* one that did not exist is set once more to a probe entry and the load repeated: if the probe
  survives among the entries, the module prepends/appends to it, otherwise it sets it;
* one the load removed, or the tool's code for the load unsets (``unset NAME;``: in a clean
  environment there is nothing to remove), is unset.

The module tools' own bookkeeping (loaded modules, reference counts, families, Lmod's module
table) and ``MODULEPATH`` are left out: a script for a shell without a module system has no use
for them, and carrying them over would make a module tool loaded later believe modules are
loaded that are not.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import DiscoveryError
from ..fsutil import scratch_dir
from .modsys import ModuleSystem

#: Variables (exact names or prefixes ending in ``_``/``*``) that are the module tools' own state.
_TOOL_STATE_NAMES = ("LOADEDMODULES", "_LMFILES_", "MODULEPATH", "MODULESHOME", "_")
_TOOL_STATE_PREFIXES = ("__LMOD_", "_ModuleTable", "LMOD_", "__MODULES_", "MODULES_", "BASH_FUNC_")
#: What of the user's environment the clean shell keeps: the tools' own configuration.
_KEPT = ("HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "LMOD_CMD", "LMOD_PKG", "LMOD_DIR",
         "MODULES_CMD", "MODULESHOME")
_UNSET = r"(?m)^\s*unset\s+([A-Za-z_][A-Za-z0-9_]*)\s*;"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: The PATH of the clean shell: what the tools themselves need (tclsh, lua), nothing of the user's.
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass
class VariableChange:
    """One variable as loading the module leaves it."""

    name: str
    action: str                          # "set", "path" (prepend/append) or "unset"
    value: str = ""                      # for "set"
    prepend: list[str] = field(default_factory=list)
    append: list[str] = field(default_factory=list)


def is_tool_state(name: str) -> bool:
    return name in _TOOL_STATE_NAMES or name.startswith(_TOOL_STATE_PREFIXES)


def clean_environment(environ: Mapping[str, str], modulepath: Sequence[str]) -> dict[str, str]:
    """A purged shell's environment: nothing loaded, ``modulepath`` to find modules in, and the
    module tool's configuration variables (``LMOD_*`` settings, ``MODULES_*`` settings) kept."""
    clean = {k: v for k, v in environ.items() if k in _KEPT}
    clean.update({k: v for k, v in environ.items()
                  if k.startswith(("LMOD_", "MODULES_")) and "FAMILY" not in k})
    clean["PATH"] = CLEAN_PATH
    clean["MODULEPATH"] = ":".join(dict.fromkeys(p for p in modulepath if p))
    return clean


def _environment_after_load(system: ModuleSystem, module: str,
                            base: Mapping[str, str]) -> tuple[dict, dict, list[str]]:
    """The environment a bash sees in ``base``, after the tool's ``load module`` ran in it, and
    the variables the tool's code for that load unsets."""
    proc = system.run(["load", module], base)
    failure = system.failure(proc)
    if failure:
        raise DiscoveryError(f"'module load {module}' failed with {system.name}: {failure}")
    with scratch_dir("load") as tmp:
        before, after = Path(tmp, "before"), Path(tmp, "after")
        script = 'env -0 > "$2"; eval "$1" 1>&2; env -0 > "$3"'
        run = subprocess.run(["bash", "--noprofile", "--norc", "-c", script, "bash", proc.stdout, before, after],
                             env=dict(base), capture_output=True, text=True)
        if run.returncode != 0 or not after.exists():
            raise DiscoveryError(f"applying {system.name}'s 'load {module}' in bash failed: "
                                 f"{' '.join(run.stderr.split())[:300] or f'exit status {run.returncode}'}")
        return _read_env(before), _read_env(after), re.findall(_UNSET, proc.stdout)


def _read_env(path: Path) -> dict[str, str]:
    raw = path.read_bytes().decode("utf-8", errors="surrogateescape")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def _around(entries: list[str], middle: list[str]) -> tuple[list[str], list[str]] | None:
    """``entries`` as ``before + middle + after``, or None when ``middle`` is not a run in it."""
    n = len(middle)
    for i in range(len(entries) - n + 1):
        if entries[i:i + n] == middle:
            return entries[:i], entries[i + n:]
    return None


def load_effect(system: ModuleSystem, module: str, modulepath: Sequence[str],
                environ: Mapping[str, str] | None = None) -> list[VariableChange]:
    """Every variable loading ``module`` (with what it loads in turn) sets, extends or unsets,
    as ``system`` does it in a purged environment with ``modulepath``; sorted by name."""
    base = clean_environment(os.environ if environ is None else environ, modulepath)
    before, after, unset = _environment_after_load(system, module, base)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k) and not is_tool_state(k))
    bad = [k for k in changed if not _NAME.match(k)]
    if bad:
        raise DiscoveryError(f"loading {module} sets {bad[0]!r}, which is not a variable name a shell can set")
    changes: dict[str, VariableChange] = {}
    new = []
    for name in changed:
        if name not in after:
            changes[name] = VariableChange(name, "unset")
        elif name not in before:
            new.append(name)
        else:
            split = _around(after[name].split(":"), before[name].split(":"))
            changes[name] = (VariableChange(name, "path", prepend=split[0], append=split[1]) if split else
                             VariableChange(name, "set", value=after[name]))
    if new:
        # Ask the tool again, each new variable holding a probe entry: kept (among others) means
        # the module adds to a path list, gone means it sets the variable.
        probe = f"/envmod-probe-{secrets.token_hex(6)}"
        _, probed, _ = _environment_after_load(system, module, {**base, **{k: probe for k in new}})
        for name in new:
            split = _around(probed.get(name, "").split(":"), [probe])
            changes[name] = (VariableChange(name, "path", prepend=split[0], append=split[1]) if split else
                             VariableChange(name, "set", value=after[name]))
    for name in unset:
        if name not in changes and name not in after and not is_tool_state(name):
            changes[name] = VariableChange(name, "unset")
    return [changes[k] for k in sorted(changes)]
