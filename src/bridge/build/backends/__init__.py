"""Backends create the environment itself; each is a small class chosen by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import UsageError
from .base import Backend
from .condaenv import CondaEnvBackend
from .rattler import RattlerBackend
from .uv import UvBackend
from .venv import VenvBackend

if TYPE_CHECKING:
    from ...config import Settings

BACKENDS: dict[str, type[Backend]] = {VenvBackend.name: VenvBackend, UvBackend.name: UvBackend,
                                      CondaEnvBackend.name: CondaEnvBackend, RattlerBackend.name: RattlerBackend}

#: backends the issue plans (#12) but envmod does not have yet: refused in one line, not as unknown
PLANNED_BACKENDS: tuple[str, ...] = ()


def check_backend_name(name: object, source: str = "--backend") -> str:
    """``name`` if it is a backend envmod has; else a one-line :class:`UsageError` saying why."""
    if name in PLANNED_BACKENDS:
        raise UsageError(f"{source}: the {name} backend is not available yet; available: "
                         f"{', '.join(sorted(BACKENDS))}")
    if not isinstance(name, str) or name not in BACKENDS:
        raise UsageError(f"{source}: unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    return name


def get_backend(name: str, settings: "Settings | None" = None) -> Backend:
    """The backend called ``name``, set up from ``settings`` (where to find its tools)."""
    return BACKENDS[check_backend_name(name, "backend")](settings)
