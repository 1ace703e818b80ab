"""The site's module system, as it runs in the user's shell: Lmod or Environment Modules.

envmod never reimplements either tool. It reads what they publish in the environment
(``LOADEDMODULES`` and ``_LMFILES_``, set by both) and asks the real command to ``show``
modules, then parses that output: Lmod prints Lua calls, Environment Modules prints Tcl.
"""

from __future__ import annotations

import os
import re
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .errors import DiscoveryError, NoModuleSystem


@dataclass(frozen=True)
class LoadedModule:
    name: str
    modulefile: str


@dataclass
class ModuleEffect:
    """What one modulefile does to the environment, as its tool reports it."""

    prepend: dict[str, list[str]] = field(default_factory=dict)
    append: dict[str, list[str]] = field(default_factory=dict)
    setenv: dict[str, str] = field(default_factory=dict)
    depends: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)

    def path_entries(self, var: str) -> list[str]:
        return self.prepend.get(var, []) + self.append.get(var, [])

    def to_json(self) -> dict:
        return {"prepend": self.prepend, "append": self.append, "setenv": self.setenv,
                "depends": self.depends, "families": self.families}

    @classmethod
    def from_json(cls, data: Mapping) -> "ModuleEffect":
        return cls(**{k: data[k] for k in ("prepend", "append", "setenv", "depends", "families")})


class ModuleSystem(ABC):
    """One module tool as the user's shell has it initialised."""

    name: str          # "lmod" or "envmodules"
    module_type: str   # the modulefile language it reads natively: "lmod" (Lua) or "tcl"

    def __init__(self, command: str, version: str | None = None) -> None:
        self.command = command
        self.version = version

    def loaded(self, environ: Mapping[str, str]) -> list[LoadedModule]:
        names = [n for n in environ.get("LOADEDMODULES", "").split(":") if n]
        files = [f for f in environ.get("_LMFILES_", "").split(":") if f]
        if len(names) != len(files):
            raise DiscoveryError(
                "LOADEDMODULES and _LMFILES_ disagree (module state is inconsistent)",
                hint="run 'module purge' and load your modules again")
        return [LoadedModule(n, f) for n, f in zip(names, files)]

    def show(self, names: Sequence[str], environ: Mapping[str, str] | None = None) -> dict[str, ModuleEffect]:
        """Each named module's effect, keyed by the modulefile path the tool reports."""
        if not names:
            return {}
        proc = self.run(["show", *names], environ)
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DiscoveryError(f"'module show {' '.join(names)}' failed with {self.name}: {first}")
        return self.parse_show(proc.stderr)

    def run(self, args: Sequence[str], environ: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv("bash", *args), capture_output=True, text=True,
                              env=dict(environ) if environ is not None else None)

    @abstractmethod
    def argv(self, shell: str, *args: str) -> list[str]: ...

    @classmethod
    @abstractmethod
    def parse_show(cls, text: str) -> dict[str, ModuleEffect]: ...


_RULE = re.compile(r"^-{20,}\s*$")


def _blocks(text: str) -> dict[str, list[str]]:
    """Split ``show`` output into the command lines of each modulefile, keyed by its path."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if _RULE.match(stripped):
            continue
        if stripped.startswith("/") and stripped.endswith(":") and not line[:1].isalpha():
            current = blocks.setdefault(stripped[:-1], [])
            continue
        if current is not None and stripped:
            current.append(stripped)
    return blocks


def _split_paths(value: str) -> list[str]:
    return [p for p in value.split(":") if p]


class Lmod(ModuleSystem):
    name = "lmod"
    module_type = "lmod"

    def argv(self, shell: str, *args: str) -> list[str]:
        return [self.command, shell, *args]

    # prepend_path("VAR","value") or, with options, prepend_path{"VAR","value",priority="10"}
    _CALL = re.compile(r'^(\w+)[({]"(.*)"(?:,\s*\w+\s*=\s*"?[^"]*"?)*[)}]$')

    @classmethod
    def parse_show(cls, text: str) -> dict[str, ModuleEffect]:
        effects = {}
        for path, lines in _blocks(text).items():
            effect = ModuleEffect()
            for line in lines:
                m = cls._CALL.match(line)
                if not m:
                    continue
                func, inner = m.groups()
                # Lmod prints values between plain double quotes without escaping, so split
                # once on the first '","': a variable name never holds a quote.
                args = inner.split('","', 1)
                if func in ("prepend_path", "append_path") and len(args) == 2:
                    target = effect.prepend if func == "prepend_path" else effect.append
                    target.setdefault(args[0], []).extend(_split_paths(args[1]))
                elif func in ("setenv", "pushenv") and len(args) == 2:
                    effect.setenv[args[0]] = args[1]
                elif func in ("depends_on", "load", "always_load", "prereq"):
                    effect.depends.extend(a for a in inner.split('","') if a)
                elif func == "family":
                    effect.families.append(inner)
            effects[path] = effect
        return effects


def tcl_words(line: str) -> list[str]:
    """Split one Tcl command line into words (braces, quotes and backslashes as Tcl reads them)."""
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            break
        if line[i] == "{":
            depth, j = 1, i + 1
            while j < n and depth:
                if line[j] == "\\":
                    j += 1
                elif line[j] == "{":
                    depth += 1
                elif line[j] == "}":
                    depth -= 1
                j += 1
            words.append(line[i + 1:j - 1])
            i = j
        else:
            quoted = line[i] == '"'
            j = i + 1 if quoted else i
            buf = []
            while j < n:
                ch = line[j]
                if ch == "\\" and j + 1 < n:
                    buf.append({"n": "\n", "t": "\t"}.get(line[j + 1], line[j + 1]))
                    j += 2
                    continue
                if (quoted and ch == '"') or (not quoted and ch in " \t"):
                    break
                buf.append(ch)
                j += 1
            words.append("".join(buf))
            i = j + 1
    return words


class EnvironmentModules(ModuleSystem):
    name = "envmodules"
    module_type = "tcl"

    def argv(self, shell: str, *args: str) -> list[str]:
        if os.access(self.command, os.X_OK):
            return [self.command, shell, *args]
        return ["tclsh", self.command, shell, *args]

    @classmethod
    def parse_show(cls, text: str) -> dict[str, ModuleEffect]:
        effects = {}
        for path, lines in _blocks(text).items():
            effect = ModuleEffect()
            for line in lines:
                words = tcl_words(line)
                if not words:
                    continue
                cmd, args = words[0], [w for w in words[1:] if not w.startswith("--")]
                if cmd in ("prepend-path", "append-path") and len(args) >= 2:
                    target = effect.prepend if cmd == "prepend-path" else effect.append
                    for value in args[1:]:
                        target.setdefault(args[0], []).extend(_split_paths(value))
                elif cmd in ("setenv", "pushenv") and len(args) == 2:
                    effect.setenv[args[0]] = args[1]
                elif cmd in ("depends-on", "prereq", "module") and args:
                    effect.depends.extend(a for a in args if a not in ("load", "try-load"))
                elif cmd == "family" and args:
                    effect.families.append(args[0])
            effects[path] = effect
        return effects


def detect_module_system(environ: Mapping[str, str] | None = None) -> ModuleSystem:
    """The module tool initialised in this environment, or :class:`NoModuleSystem`."""
    environ = os.environ if environ is None else environ
    lmod_cmd = environ.get("LMOD_CMD")
    if lmod_cmd and os.path.exists(lmod_cmd):
        return Lmod(lmod_cmd, environ.get("LMOD_VERSION"))
    modules_cmd = environ.get("MODULES_CMD")
    if modules_cmd and os.path.exists(modules_cmd):
        return EnvironmentModules(modules_cmd)
    raise NoModuleSystem(
        "no module system is initialised in this shell (neither LMOD_CMD nor MODULES_CMD is set)",
        hint="initialise your site's Lmod or Environment Modules first, or pass --python EXE and --module-type")
