from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ...discover.pyinfo import PythonInfo

if TYPE_CHECKING:
    from ...config import Settings
    from ...discover.stack import CentralModule, CentralStack
    from ...store.record import EnvRecord
    from ..install import PipInstaller


class Backend(ABC):
    """Makes an environment over a central Python at a given (staging) path."""

    name: str
    #: built where it stays (conda writes its prefix into files): the store gives each build its
    #: own directory and links the env's name to it, instead of renaming a staging dir into place
    builds_in_place: bool = False
    #: whether plan() must find a central Python (a conda env brings its own)
    needs_central_python: bool = True

    def __init__(self, settings: "Settings | None" = None) -> None:
        self.settings = settings

    def check(self) -> None:
        """Fail early, before anything is built, when this backend's tools are missing."""

    def start_early(self) -> None:
        """Start, before the create plans, what is slow to start and needed later (rattler's
        worker), so that its start overlaps the planning; :meth:`close` stops what went unused."""

    def close(self) -> None:
        """Stop what :meth:`start_early` or :meth:`start_create` started and the create did not
        wait for (it failed first)."""

    def prepare(self, request: Any, stack: "CentralStack", central_python: PythonInfo | None,
                environ: Mapping[str, str]) -> None:
        """Plan what the backend itself installs, before anything is built (a conda solve)."""

    def extra_dependencies(self, stack: "CentralStack") -> "list[CentralModule]":
        """Loaded modules the env's module must load besides the evidence's (the conda module)."""
        return []

    def annotate(self, record: "EnvRecord") -> None:
        """Add what only this backend knows to the env's record (the conda side)."""

    @abstractmethod
    def create(self, python: PythonInfo, target: Path, final: Path, env_name: str) -> None:
        """Create the environment at ``target``; ``final`` is where it will live once renamed."""

    def start_create(self, python: PythonInfo, target: Path, final: Path, env_name: str) -> None:
        """:meth:`create`, leaving what packages do not need running in the background (venv's
        activate scripts) while the caller installs; :meth:`finish_create` waits for it, and
        :meth:`close` stops it if the create fails first."""
        self.create(python, target, final, env_name)

    def finish_create(self) -> None:
        """Wait for what :meth:`start_create` left running; its failure is the create's."""

    @abstractmethod
    def python(self, prefix: Path) -> Path:
        """The environment's interpreter under ``prefix``."""

    def relocate_copy(self, copy: Path, old: Path, new: Path) -> list[str]:
        """Make ``copy``, a copy of an env of this backend made at ``old``, correct at ``new`` (the
        node-local path a packed image runs from: ``envmod pack``); return the files (relative)
        that still name ``old`` and could not be rewritten. The default suits a venv: its text
        files (script shebangs, activate scripts, ``.pth``) and symlinks are rewritten. A backend
        whose envs name their prefix in binaries (conda) must override this."""
        from ...stage.relocate import relocate_tree

        return relocate_tree(copy, old, new)

    def installer(self, python: Path, *args: Any, **kwargs: Any) -> "PipInstaller":
        """What installs packages into this backend's environment whose interpreter is ``python``
        (pip, unless a backend says otherwise); the rest of the arguments are PipInstaller's."""
        from ..install import PipInstaller

        return PipInstaller(python, *args, **kwargs)
