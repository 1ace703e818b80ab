"""Backends create the environment itself; each is a small class chosen by name."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ...errors import UsageError

if TYPE_CHECKING:
    from ...config import Settings
    from .base import Backend

#: each backend's module and class, imported only when that backend is used: a create pays for
#: the one it runs, not for the others' imports (pip's installer, conda's, ...)
BACKENDS: dict[str, str] = {"venv": "venv:VenvBackend", "uv": "uv:UvBackend", "conda": "condaenv:CondaEnvBackend",
                            "rattler": "rattler:RattlerBackend"}

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
    module, cls = BACKENDS[check_backend_name(name, "backend")].split(":")
    backend: type[Backend] = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    return backend(settings)
