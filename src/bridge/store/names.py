"""What an environment may be called.

The name becomes a directory, a module name and text inside modulefiles, so it is held to a
small character set rather than escaped: a user should be able to type it anywhere.

A new environment's name must also load in Lmod and in Environment Modules 5 alike, whichever
module type is written first. Environment Modules 5 reads ``+``, ``~``, ``@`` and ``=`` in a
module specification as variants and versions (``module load A+1/py3.11`` looks for ``A`` with
a variant), so :func:`validate_new_env_name` refuses them; :func:`validate_env_name` still
accepts a ``+`` so that an env made before that rule can be shown, checked and removed.
"""

from __future__ import annotations

import re

from ..errors import InvalidName

MAX_NAME_LENGTH = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")
_NAME_CHARS = "use letters, digits and . _ - only, starting with a letter or digit"
# What Environment Modules 5's module specification gives a meaning to, and which meaning.
_MODULE_SPEC_CHARS = {"+": "a variant", "~": "a variant turned off", "@": "a version", "=": "a variant's value"}


def validate_env_name(name: str) -> str:
    """Return ``name`` if it is a usable environment name, else raise :class:`InvalidName`."""
    if not name:
        raise InvalidName("environment name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"environment name is longer than {MAX_NAME_LENGTH} characters: {name[:20]!r}...")
    if not _NAME.match(name):
        raise InvalidName(f"invalid environment name {name!r}", hint=_NAME_CHARS)
    if name.endswith((".lua", ".tcl")) or name in {"envs", "modules", "logs"}:
        raise InvalidName(f"environment name {name!r} is reserved")
    return name


def validate_new_env_name(name: str) -> str:
    """Return ``name`` if a new environment may take it: a usable name whose module both module
    tools can load, else raise :class:`InvalidName` saying which character is in the way."""
    special = next((c for c in name if c in _MODULE_SPEC_CHARS), None)
    if special is not None:
        raise InvalidName(f"invalid environment name {name!r}: Environment Modules reads {special!r} in a "
                          f"module name as {_MODULE_SPEC_CHARS[special]}, so it could not load the module",
                          hint=_NAME_CHARS)
    validate_env_name(name)
    return name


MAX_DESCRIPTION_LENGTH = 2000


def validate_description(text: str) -> str:
    """A description is free text (it is escaped wherever it lands) but must be real text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName("--description is not valid UTF-8 text") from None
    if len(text) > MAX_DESCRIPTION_LENGTH:
        raise InvalidName(f"--description is longer than {MAX_DESCRIPTION_LENGTH} characters")
    return text
