"""The command a user types for envmod: each front end speaks its own language.

An env made with ``spack envmod create`` is handled with ``spack envmod ...`` (after the Spack
extension's setup, the ``envmod`` program is only in ``SPACK_PYTHON``'s ``bin/``); one made with
the ``envmod`` program, or by EasyBuild's ``UserEnv`` easyblock (whose users get ``envmod`` as
``easyblocks/README.md`` says), with ``envmod ...``. The record names its front end
(``created.front_end``), so what is written for an env (modulefile help, export headers) names
its command; messages with no env at hand name the front end that is running.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store.record import EnvRecord

#: front end (as recorded in ``created.front_end``) -> the command its users type
COMMANDS = {"envmod": "envmod", "spack": "spack envmod", "easybuild": "envmod"}
#: records written before front ends were recorded were made by the envmod program
DEFAULT = "envmod"

_running = DEFAULT


def user_command(front_end: str | None = None) -> str:
    """The command of ``front_end`` (default: the one running this process)."""
    return COMMANDS.get(front_end or _running, COMMANDS[DEFAULT])


def command_for(record: EnvRecord) -> str:
    """The command that handles ``record``'s env: that of the front end that created it."""
    return user_command(getattr(record.created, "front_end", None) or DEFAULT)


def set_running(front_end: str) -> None:
    """Called once by a front end other than the envmod program (``spack envmod``) at start."""
    global _running
    if front_end not in COMMANDS:
        raise ValueError(f"unknown front end {front_end!r}")
    _running = front_end
