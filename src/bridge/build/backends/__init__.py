"""Backends create the environment itself; each is a small class chosen by name."""

from __future__ import annotations

from ...errors import UsageError
from .base import Backend
from .venv import VenvBackend

BACKENDS: dict[str, type[Backend]] = {VenvBackend.name: VenvBackend}


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]()
    except KeyError:
        raise UsageError(f"unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}") from None
