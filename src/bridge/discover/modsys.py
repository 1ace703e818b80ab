"""The site's module system, as it runs in the user's shell: Lmod or Environment Modules.

envmod never reimplements either tool. It reads what they publish in the environment
(``LOADEDMODULES`` and ``_LMFILES_``, set by both) and asks the real command to ``show``
modules, then parses that output: Lmod prints Lua calls, Environment Modules prints Tcl.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

from ..errors import DiscoveryError, NoModuleSystem

if TYPE_CHECKING:
    import subprocess


@dataclass(frozen=True)
class LoadedModule:
    """A loaded module as the tool publishes it: its name and modulefile."""

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
        """The entries the module adds to ``var``, in the order they end up in it."""
        return self.prepend.get(var, []) + self.append.get(var, [])

    def add_path(self, var: str, entries: list[str], prepend: bool) -> None:
        """One prepend/append statement: a later prepend goes in front of the earlier ones,
        as the module tool puts it on the variable (``prepend`` is kept in effective order)."""
        if prepend:
            self.prepend[var] = entries + self.prepend.get(var, [])
        else:
            self.append.setdefault(var, []).extend(entries)

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
        failure = self.failure(proc)
        if failure:
            raise DiscoveryError(f"'module show {' '.join(names)}' failed with {self.name}: {failure}")
        return self.parse_show(proc.stderr)

    def failure(self, proc: subprocess.CompletedProcess) -> str | None:
        """Why a module command failed, in the tool's own words; None if it did not."""
        if proc.returncode == 0:
            return None
        return _reason(proc.stderr) or f"exit status {proc.returncode}"

    def run(self, args: Sequence[str], environ: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        import subprocess  # a cached discovery runs no module command

        return subprocess.run(self.argv("bash", *args), capture_output=True, text=True,
                              env=dict(environ) if environ is not None else None)

    @abstractmethod
    def argv(self, shell: str, *args: str) -> list[str]: ...

    @classmethod
    def parse_show(cls, text: str) -> dict[str, ModuleEffect]:
        """The effect of each modulefile in ``show`` output, keyed by its path."""
        effects = {}
        for path, lines in _blocks(text).items():
            effect = ModuleEffect()
            for line in lines:
                cls.read_show_line(line, effect)
            effects[path] = effect
        return effects

    @classmethod
    @abstractmethod
    def read_show_line(cls, line: str, effect: ModuleEffect) -> None:
        """Add what one command line of ``show`` output does to ``effect``."""


# Patterns for parsing `module show` output, left to re's cache: a create whose discovery is
# cached parses none, so compiling them at import would be a cost with no use.
_RULE = r"^-{20,}\s*$"


def _reason(text: str) -> str:
    """A tool's error message folded onto one line (tools wrap it over several)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not re.match(_RULE, line.strip())]
    return " ".join(lines)[:300]


def _blocks(text: str) -> dict[str, list[str]]:
    """Split ``show`` output into the command lines of each modulefile, keyed by its path.

    A block's header is the path line right after a rule of dashes (help text can hold lines
    that look like paths, so position, not shape, decides).
    """
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    after_rule = False
    for line in text.splitlines():
        stripped = line.strip()
        if re.match(_RULE, stripped):
            after_rule = True
            continue
        if after_rule and stripped.startswith("/") and stripped.endswith(":"):
            current = blocks.setdefault(stripped[:-1], [])
        elif current is not None and stripped:
            current.append(stripped)
        after_rule = False
    return blocks


def _split_paths(value: str, delim: str = ":") -> list[str]:
    return [p for p in value.split(delim or ":") if p]


class Lmod(ModuleSystem):
    name = "lmod"
    module_type = "lmod"

    def argv(self, shell: str, *args: str) -> list[str]:
        return [self.command, shell, *args]

    # prepend_path("VAR","value") or, with options, prepend_path{"VAR","value",priority="10"}
    _CALL = r"^(\w+)\s*[({](.*)[)}]\s*$"
    _OPTION = r',\s*(\w+)\s*=\s*("[^"]*"|[^,"]*)\s*$'
    _DEPENDS = ("depends_on", "load", "always_load", "prereq", "try_load")

    @classmethod
    def _arguments(cls, inner: str) -> tuple[list[str], dict[str, str]] | None:
        """Positional strings and trailing key=value options of one printed call.

        Lmod prints strings between plain double quotes without escaping them, so arguments
        are split on '","' boundaries; a variable name never holds a quote.
        """
        options = {}
        while (m := re.search(cls._OPTION, inner)) is not None:
            options[m.group(1)] = m.group(2).strip().strip('"')
            inner = inner[:m.start()]
        inner = inner.strip()
        if len(inner) < 2 or not (inner.startswith('"') and inner.endswith('"')):
            return None
        return re.split(r'"\s*,\s*"', inner[1:-1]), options

    @classmethod
    def read_show_line(cls, line: str, effect: ModuleEffect) -> None:
        m = re.match(cls._CALL, line)
        parsed = cls._arguments(m.group(2)) if m else None
        if m is None or not parsed:
            return
        func, (args, options) = m.group(1), parsed
        if func in ("prepend_path", "append_path") and len(args) >= 2:
            delim = options.get("delim") or (args[2] if len(args) == 3 and len(args[2]) <= 2 else ":")
            value = args[1] if len(args) == 3 and len(args[2]) <= 2 else '","'.join(args[1:])
            effect.add_path(args[0], _split_paths(value, delim), prepend=func == "prepend_path")
        elif func in ("setenv", "pushenv") and len(args) >= 2:
            effect.setenv[args[0]] = '","'.join(args[1:])
        elif func in cls._DEPENDS:
            effect.depends.extend(a for a in args if a)
        elif func == "family":
            effect.families.append(args[0])


def tcl_words(line: str) -> list[str]:
    """Split one line of Environment Modules' ``show`` output into words.

    It prints values raw (no Tcl escaping), braced when they hold spaces, so a bare word is
    taken literally, backslashes and quotes included.
    """
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
                if line[j] == "{":
                    depth += 1
                elif line[j] == "}":
                    depth -= 1
                j += 1
            words.append(line[i + 1:j - 1])
            i = j
        else:
            j = i
            while j < n and line[j] not in " \t":
                j += 1
            words.append(line[i:j])
            i = j
    return words


class EnvironmentModules(ModuleSystem):
    name = "envmodules"
    module_type = "tcl"

    def argv(self, shell: str, *args: str) -> list[str]:
        if os.access(self.command, os.X_OK):
            return [self.command, shell, *args]
        return ["tclsh", self.command, shell, *args]

    def failure(self, proc: subprocess.CompletedProcess) -> str | None:
        # modulecmd.tcl exits 0 even when a module is missing; its shell code then ends in a
        # failing 'test 0 = 1;' and stderr carries the ERROR lines.
        failed = proc.returncode != 0 or "test 0 = 1" in proc.stdout
        if not failed:
            return None
        return _reason(proc.stderr) or f"exit status {proc.returncode}"

    _DEPENDS = ("depends-on", "prereq", "prereq-all", "prereq-any", "always-load")

    @staticmethod
    def _path_arguments(args: list[str]) -> tuple[str, list[str]]:
        """Strip options (``--delim X``, ``-d X``, ``--delim=X``, ``--duplicates``...) from
        prepend-path/append-path arguments; return the delimiter and the rest."""
        delim, rest, i = ":", [], 0
        while i < len(args):
            word = args[i]
            if word in ("--delim", "-d") and i + 1 < len(args):
                delim, i = args[i + 1], i + 2
                continue
            if word.startswith("--delim="):
                delim = word.split("=", 1)[1]
            elif not word.startswith("-"):
                rest.append(word)
            i += 1
        return delim, rest

    @classmethod
    def read_show_line(cls, line: str, effect: ModuleEffect) -> None:
        words = tcl_words(line)
        if not words:
            return
        cmd, args = words[0], words[1:]
        if cmd in ("prepend-path", "append-path"):
            delim, rest = cls._path_arguments(args)
            if len(rest) >= 2:
                effect.add_path(rest[0], [e for value in rest[1:] for e in _split_paths(value, delim)],
                                prepend=cmd == "prepend-path")
        elif cmd in ("setenv", "pushenv") and len(args) == 2:
            effect.setenv[args[0]] = args[1]
        elif cmd in cls._DEPENDS:
            effect.depends.extend(a for a in args if not a.startswith("-"))
        elif cmd == "module" and args and args[0] in ("load", "try-load", "load-any"):
            effect.depends.extend(a for a in args[1:] if not a.startswith("-"))
        elif cmd == "family" and args:
            effect.families.append(args[0])


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
