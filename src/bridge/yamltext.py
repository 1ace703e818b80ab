"""Block-style YAML text for envmod's own files (the environment record), written without PyYAML.

A create writes a record every time and reads none, so importing PyYAML's emitter there is a
cost with no use. Keys and values come only from the record's dataclasses: mappings, lists,
strings, numbers, booleans and None. Every string is written double-quoted with JSON's escapes,
which YAML's double-quoted style reads back verbatim; characters YAML does not take raw in a
document (C0/C1 controls, DEL, the Unicode line and paragraph separators, lone surrogates) are
escaped too. Any YAML reader gets back exactly the data written.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Not printable in a YAML stream, or a line break YAML would fold: escape as \uXXXX. Compiled
# only for text beyond ASCII (re caches it): its wide ranges make compiling it a noticeable part
# of writing a record, and most records are ASCII.
_UNSAFE = "[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]"
_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar."""
    dumped = json.dumps(text, ensure_ascii=False)
    if dumped.isascii() and "\x7f" not in dumped:      # nothing _UNSAFE could match
        return dumped
    return re.sub(_UNSAFE, lambda m: f"\\u{ord(m.group()):04x}", dumped)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        # YAML 1.1 (PyYAML) reads 1e+300 as a string: its floats need a dot in the mantissa
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    if isinstance(value, str):
        return quoted(value)
    raise TypeError(f"cannot write a {type(value).__name__} as YAML")


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"mapping keys must be strings, not {type(key).__name__}")
    return key if _PLAIN_KEY.fullmatch(key) and key.lower() not in _WORDS else quoted(key)


def _is_block(value: Any) -> bool:
    return isinstance(value, (dict, list, tuple)) and len(value) > 0


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if _is_block(item):
                out.append(f"{pad}{_key(key)}:")
                out += _lines(item, indent + 2)
            else:
                out.append(f"{pad}{_key(key)}: {_inline(item)}")
    else:
        for item in value:
            if isinstance(item, dict) and item:
                inner = _lines(item, indent + 2)
                out.append(f"{pad}- {inner[0].lstrip()}")
                out += inner[1:]
            elif _is_block(item):
                out.append(f"{pad}-")
                out += _lines(item, indent + 2)
            else:
                out.append(f"{pad}- {_inline(item)}")
    return out


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    return _scalar(value)


def dump(data: dict[str, Any]) -> str:
    """``data`` (a mapping) as a block-style YAML document."""
    if not isinstance(data, dict):
        raise TypeError("a YAML document here is a mapping")
    return "\n".join(_lines(data, 0)) + "\n" if data else "{}\n"
