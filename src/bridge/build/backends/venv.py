"""The venv backend: a standard virtual environment with the central site-packages visible.

It writes what ``python -m venv --without-pip --system-site-packages`` writes, in-process,
so creating an env costs no interpreter start. pip is the central Python's own (visible
through the system site-packages); small ``pip`` launchers in ``bin/`` make a bare ``pip``
install into the env rather than into the central Python.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ...discover.pyinfo import PythonInfo
from ...errors import ConfigError
from .base import Backend

_PIP_LAUNCHER = """{shebang}
# envmod: pip from the central Python, installing into this environment.
import sys
from pip._internal.cli.main import main
if __name__ == "__main__":
    sys.exit(main())
"""


#: the kernel reads at most this much of a #! line (127 before Linux 5.1)
_SHEBANG_MAX = 127


def script_shebang(python: Path) -> str:
    """A #! line running ``python``. The kernel splits a #! line at white space and cuts it short,
    so a script under such a path starts through /bin/sh, as pip's own launchers do: the second
    line is shell to sh and a string to Python."""
    text = str(python)
    if not any(c.isspace() for c in text) and len(text) + 2 <= _SHEBANG_MAX:
        return f"#!{text}"
    if "'''" in text:
        raise ConfigError(f"cannot write a launcher for {text}: the path holds '''", hint="choose another envmod root")
    quoted = '"' + re.sub(r'([\\"$`])', r"\\\1", text) + '"'
    return "#!/bin/sh\n'''exec' " + quoted + ' "$0" "$@"\n' + "' '''"


class VenvBackend(Backend):
    name = "venv"

    def python(self, prefix: Path) -> Path:
        return prefix / "bin" / "python"

    def create(self, python: PythonInfo, target: Path, final: Path, env_name: str) -> None:
        short = python.short_version
        bindir = target / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        (target / "include").mkdir(exist_ok=True)
        (target / "lib" / f"python{short}" / "site-packages").mkdir(parents=True, exist_ok=True)
        if os.sep == "/" and not (target / "lib64").exists():
            os.symlink("lib", target / "lib64")
        base = python.executable
        (target / "pyvenv.cfg").write_text(
            f"home = {os.path.dirname(base)}\n"
            "include-system-site-packages = true\n"
            f"version = {python.version}\n"
            f"executable = {os.path.realpath(base)}\n"
            f"command = envmod create {env_name} (venv over {base})\n")
        os.symlink(base, bindir / "python")
        for alias in ("python3", f"python{short}"):
            os.symlink("python", bindir / alias)
        if python.has_pip:
            launcher = _PIP_LAUNCHER.format(shebang=script_shebang(final / "bin" / "python"))
            for alias in ("pip", "pip3", f"pip{short}"):
                (bindir / alias).write_text(launcher)
                os.chmod(bindir / alias, 0o755)
        self._activate_scripts(python, bindir, final, env_name)

    @staticmethod
    def _activate_scripts(python: PythonInfo, bindir: Path, final: Path, env_name: str) -> None:
        """venv's own activate scripts from the central Python, for users who source them.

        Their placeholders are filled as values of each script's language (:func:`fill_activate_template`),
        whichever generation of templates the central Python ships: before gh-124651 they sit inside
        double quotes (``VIRTUAL_ENV="__VENV_DIR__"``), since then bare (the caller quotes). Raw text
        would break either on an envmod root holding a space, and run ``$(...)`` or backticks in it.
        """
        scripts = Path(python.base_prefix) / "lib" / f"python{python.short_version}" / "venv" / "scripts"
        # venv's context.prompt: '(name) ' until 3.13, whose templates add the parentheses themselves.
        major, minor = (int(part) for part in python.short_version.split(".")[:2])
        prompt = env_name if (major, minor) >= (3, 13) else f"({env_name}) "
        replacements = {"__VENV_DIR__": str(final), "__VENV_NAME__": env_name,
                        "__VENV_PROMPT__": prompt, "__VENV_BIN_NAME__": "bin",
                        "__VENV_PYTHON__": str(final / "bin" / "python")}
        for sub in ("common", "posix"):
            folder = scripts / sub
            if not folder.is_dir():
                continue
            for src in folder.iterdir():
                if not src.is_file():
                    continue
                try:
                    text = src.read_text(encoding="utf-8")
                    text = fill_activate_template(text, script_dialect(src.name), replacements)
                except (OSError, UnicodeDecodeError, ValueError):
                    continue        # a script that cannot be filled safely is better left out
                (bindir / src.name).write_text(text, encoding="utf-8")


# ---- activate templates --------------------------------------------------------------------

_SAFE = re.compile(r"[\w@%+=:,./-]+", re.ASCII)     # shlex.quote's words that need no quotes


def _quote_fish(value: str) -> str:
    # fish: single quotes keep everything but \\ and \' (shlex.quote would turn \\ into \)
    if value and _SAFE.fullmatch(value) and "%" not in value:
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote_ps1(value: str) -> str:
    return "'" + re.sub(r"(['\u2018\u2019\u201a\u201b])", r"\1\1", value) + "'"


def _quote_nu(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    hashes = "#"
    while f"'{hashes}" in value:
        hashes += "#"
    return f"r{hashes}'{value}'{hashes}"


@dataclass(frozen=True)
class _Dialect:
    """What :func:`fill_activate_template` needs to know of a shell's lexical rules."""

    quote: Callable[[str], str]          # a value as one word, outside any quotes
    squote_escapes: str = ""             # characters a backslash escapes inside '...'
    dquote_escape: str | None = "\\"     # what escapes the next character inside "..."
    escape_char: str | None = "\\"       # what escapes the next character outside quotes
    splice: bool = True                  # adjacent quoted parts join into one word ("a"'b')
    block_comments: bool = False         # PowerShell's <# ... #>


DIALECTS = {
    "sh": _Dialect(shlex.quote),
    "csh": _Dialect(shlex.quote, dquote_escape=None),
    "fish": _Dialect(_quote_fish, squote_escapes="\\'"),
    "ps1": _Dialect(_quote_ps1, dquote_escape="`", escape_char="`", splice=False, block_comments=True),
    "nu": _Dialect(_quote_nu, escape_char=None, splice=False),
}


def script_dialect(filename: str) -> str:
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return {"csh": "csh", "tcsh": "csh", "fish": "fish", "ps1": "ps1", "nu": "nu"}.get(suffix, "sh")


def _in_string(value: str, dialect: str, quote: str) -> str:
    """``value`` escaped to stay inside the string it stands in, for a language whose adjacent
    strings do not join into one word (PowerShell, nu) and for bash's ``$'...'``."""
    if quote == "$'":       # bash's $'...': backslash escapes, as in C
        return value.replace("\\", "\\\\").replace("'", "\\'")
    if dialect == "ps1":
        if quote == "'":
            return _quote_ps1(value)[1:-1]
        return re.sub(r"([`$\"\u201c\u201d\u201e])", r"`\1", value)
    if quote == '"':
        return value.replace("\\", "\\\\").replace('"', '\\"')
    if "'" in value:
        raise ValueError(f"cannot put {value!r} inside a single-quoted {dialect} string")
    return value


#: characters that never start a placeholder, a quote, a comment or an escape in any dialect
_ORDINARY_RUN = re.compile(r"[^_'\"#<>\\`\n]*")


def fill_activate_template(text: str, dialect: str, replacements: Mapping[str, str]) -> str:
    """Replace venv's ``__VENV_*__`` placeholders in an activate script by their values, each
    quoted for where it stands in the script: bare, it becomes one quoted word; inside quotes
    (the templates before gh-124651), the string is closed around the quoted value (or, in a
    language that cannot join strings, the value is escaped for the string); in a comment, it
    is written as it is. Both template generations so give the same script, and no value can
    end a string early or expand (``$(...)``, backticks, ``$VAR``) when the script is sourced.
    """
    rules = DIALECTS[dialect]
    pattern = re.compile("|".join(re.escape(key) for key in sorted(replacements, key=len, reverse=True)))
    out: list[str] = []
    state = None            # None, "'", '"', "$'" (bash's ANSI-C string), "#" (comment), "<#"
    opened = -1             # where in ``out`` the current string's opening quote is
    i, n = 0, len(text)
    while i < n:
        # Only these characters can start a placeholder or change the lexer's state: copy any
        # run of others at once (the scripts are a few kB, sourced by every create).
        run = _ORDINARY_RUN.match(text, i).end()
        if run > i:
            out.append(text[i:run])
            i = run
            if i == n:
                break
        match = pattern.match(text, i) if text.startswith("__", i) else None
        if match:
            value = replacements[match.group()]
            i = match.end()
            if state is None:
                out.append(rules.quote(value))
            elif state in ("#", "<#"):
                out.append(value.replace("\n", " "))
            elif not rules.splice or state == "$'":
                out.append(_in_string(value, dialect, state))
            else:
                close = state[-1]
                if opened == len(out) - 1:      # nothing in the string before it: no empty "" part
                    out.pop()
                else:
                    out.append(close)
                out.append(rules.quote(value))
                if i < n and text[i] == close:  # it ended the string: no empty "" part either
                    i += 1
                    state = None
                else:
                    opened = len(out)
                    out.append(state)
            continue
        ch = text[i]
        if state is None:
            prev = text[i - 1] if i else "\n"
            if ch == rules.escape_char and i + 1 < n:
                out.append(text[i:i + 2])
                i += 2
                continue
            if rules.block_comments and text.startswith("<#", i):
                state = "<#"
                out.append("<#")
                i += 2
                continue
            if ch == "#" and (prev.isspace() or prev in ";&|()<>"):
                state = "#"
            elif ch in "'\"":
                state = "$'" if ch == "'" and dialect == "sh" and prev == "$" else ch
                opened = len(out)
        elif state == "#":
            if ch == "\n":
                state = None
        elif state == "<#":
            if text.startswith("#>", i):
                out.append("#>")
                i += 2
                state = None
                continue
        else:
            if i + 1 < n and (state == "$'" and ch == "\\"
                              or state == "'" and ch == "\\" and text[i + 1] in rules.squote_escapes
                              or state == '"' and ch == rules.dquote_escape):
                out.append(text[i:i + 2])       # an escaped character: never a quote that ends it
                i += 2
                continue
            if ch == state[-1]:
                state = None
        out.append(ch)
        i += 1
    return "".join(out)


def relocate(prefix: Path, old: Path, new: Path) -> int:
    """Point text files that name the staging path (pip's script shebangs) at the final path."""
    old_b, new_b = os.fsencode(str(old)), os.fsencode(str(new))
    candidates = [p for p in (prefix / "bin").iterdir() if p.is_file() and not p.is_symlink()]
    candidates += list(prefix.glob("lib/python*/site-packages/*.pth"))
    changed = 0
    for path in candidates:
        try:
            if path.stat().st_size > 1 << 20:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if old_b in data:
            mode = path.stat().st_mode
            tmp = path.with_name(path.name + ".envmod-tmp")
            tmp.write_bytes(data.replace(old_b, new_b))
            os.chmod(tmp, mode)
            os.replace(tmp, path)
            changed += 1
    return changed

