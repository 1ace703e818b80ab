from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from ...discover.pyinfo import PythonInfo


class Backend(ABC):
    """Makes an environment over a central Python at a given (staging) path."""

    name: str

    @abstractmethod
    def create(self, python: PythonInfo, target: Path, final: Path, env_name: str) -> None:
        """Create the environment at ``target``; ``final`` is where it will live once renamed."""

    @abstractmethod
    def python(self, prefix: Path) -> Path:
        """The environment's interpreter under ``prefix``."""
