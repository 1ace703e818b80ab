"""Every value that lands in Lua, Tcl, shell (sh, csh, fish) or JSON text is quoted here, and only here.

Modulefiles are code: a description or a path must never be able to end its string and run
something. Each function returns a complete literal (quotes included) that the target language
reads back as exactly the input text.
"""

from __future__ import annotations

import shlex

_LUA_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\000"}


def lua_string(value: object) -> str:
    """A Lua double-quoted string literal for ``value``.

    Control characters become decimal escapes (``\\ddd``, always three digits so a following
    digit cannot extend them); non-ASCII text passes through as UTF-8, which Lua copies
    byte for byte.
    """
    return _quoted(value, _LUA_ESCAPES, "\\{:03d}")


# In a Tcl double-quoted word, $ [ ] \ and " are special; braces are not, but escaping
# them keeps editors and Tcl's brace counting in `proc` bodies out of trouble.
_TCL_ESCAPES = {
    "\\": "\\\\", '"': '\\"', "$": "\\$", "[": "\\[", "]": "\\]", "{": "\\{", "}": "\\}",
    "\n": "\\n", "\r": "\\r", "\t": "\\t",
}


def tcl_string(value: object) -> str:
    """A Tcl double-quoted word for ``value`` with no substitution left in it."""
    return _quoted(value, _TCL_ESCAPES, "\\x{:02x}")


def _quoted(value: object, escapes: dict[str, str], control: str) -> str:
    """``value`` between double quotes, with ``escapes`` applied and other control characters
    written as ``control`` formatted with their code."""
    out = []
    for ch in str(value):
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(control.format(ord(ch)))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def shell_word(value: object) -> str:
    """A POSIX shell word for ``value``."""
    return shlex.quote(str(value))


def csh_word(value: object) -> str:
    """A csh/tcsh word for ``value``: single quotes, a quote written ``'\\''``.

    csh has no quoting that can hold a line break, and ``!`` starts a history substitution
    even between single quotes in an interactive shell that sources the file: text holding
    either (or another control character) is refused, not written wrong.
    """
    text = str(value)
    bad = next((ch for ch in text if ch == "!" or ord(ch) < 0x20 or ord(ch) == 0x7F), None)
    if bad is not None:
        raise ValueError(f"csh cannot hold {text[:40]!r}: it contains {bad!r} (no csh quoting keeps it literal)")
    return "'" + text.replace("'", "'\\''") + "'"


def fish_word(value: object) -> str:
    """A fish word for ``value``: between single quotes only ``\\`` and ``\\'`` are special."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def variable_name(value: object) -> str:
    """An environment variable's name, as every shell takes it bare: anything else is refused."""
    import re

    text = str(value)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        raise ValueError(f"{text[:40]!r} is not a variable name a shell can set")
    return text


def json_value(value: object) -> str:
    """``value`` as a JSON literal (a kernelspec's kernel.json)."""
    import json

    return json.dumps(value, ensure_ascii=False)


def comment_text(value: object) -> str:
    """``value`` for a ``#`` comment line of a line-based file (a requirements file): a line
    break in it would start a line the reader takes for data, so control characters are refused."""
    text = str(value)
    bad = next((ch for ch in text if ord(ch) < 0x20 or ord(ch) == 0x7F), None)
    if bad is not None:
        raise ValueError(f"refusing to write {text[:40]!r} into a comment: it holds the control character {bad!r}")
    return text


def yaml_string(value: object) -> str:
    """A YAML double-quoted scalar for ``value`` (an environment.yml's name, channel or spec):
    printable ASCII as is, everything else escaped, so no value can end its string, start a
    line, or be read as a number, a boolean or a mapping."""
    out = []
    for ch in str(value):
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


QUOTERS = {"lua": lua_string, "tcl": tcl_string, "sh": shell_word, "csh": csh_word, "fish": fish_word,
           "json": json_value, "varname": variable_name, "comment": comment_text, "yaml": yaml_string}
