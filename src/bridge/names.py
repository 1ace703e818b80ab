"""What an environment may be called.

The name becomes a directory, a module name and text inside modulefiles, so it is held to a
small character set rather than escaped: a user should be able to type it anywhere.
"""

from __future__ import annotations

import re

from .errors import InvalidName

MAX_NAME_LENGTH = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")


def validate_env_name(name: str) -> str:
    """Return ``name`` if it is a usable environment name, else raise :class:`InvalidName`."""
    if not name:
        raise InvalidName("environment name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"environment name is longer than {MAX_NAME_LENGTH} characters: {name[:20]!r}...")
    if not _NAME.match(name):
        raise InvalidName(
            f"invalid environment name {name!r}",
            hint="use letters, digits and . _ + - only, starting with a letter or digit",
        )
    if name.endswith((".lua", ".tcl")) or name in {"envs", "modules", "logs"}:
        raise InvalidName(f"environment name {name!r} is reserved")
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
