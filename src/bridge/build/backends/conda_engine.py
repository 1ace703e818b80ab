"""What a conda-environment backend needs of the tool that solves and installs conda packages.

Two engines implement :class:`CondaEngine`: the site's conda CLI (``conda.py``, driven with
``--json``) and py-rattler (``rattler.py``, run in a child process). The conda backends build on
it the same way whichever engine does the work, so the record, the MPI rule, the module and the
safety of an env do not depend on which tool made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence


@dataclass(frozen=True)
class CondaPackage:
    """One conda package of an env or of a solution, as ``conda list --json`` describes it."""

    name: str
    version: str
    build: str
    channel: str          # the channel URL it came from, label included (file:///c/label/mpi-external)
    subdir: str = ""      # linux-64, noarch

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "build": self.build,
                "channel": self.channel, "subdir": self.subdir}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CondaPackage":
        return cls(name=str(data["name"]), version=str(data["version"]), build=str(data["build"]),
                   channel=str(data.get("channel", "")), subdir=str(data.get("subdir", "")))

    @property
    def pin(self) -> str:
        """The exact spec of this package: ``name=version=build``."""
        return f"{self.name}={self.version}={self.build}"


class CondaEngine(Protocol):
    """Solves and installs conda packages from given channels (never the user's .condarc ones)."""

    #: "conda" (the conda CLI, or mamba/micromamba through the same flags) or "rattler"
    name: str

    def describe(self) -> dict[str, Any]:
        """What the record keeps of the engine: tool, version, executable, solver, and the
        module that provides it (None when not from a module)."""
        ...

    def solve(self, specs: Sequence[str], channels: Sequence[str]) -> list[CondaPackage]:
        """The packages an env of ``specs`` would hold (a dry run: nothing is written)."""
        ...

    def install(self, prefix: Path, specs: Sequence[str], channels: Sequence[str]) -> list[CondaPackage]:
        """Create the env at the absolute ``prefix`` (which does not exist yet) holding ``specs``
        (solving them: a failed solve is a PlanError); the packages it linked."""
        ...

    def installed(self, prefix: Path) -> list[CondaPackage]:
        """The conda packages in the env at ``prefix``."""
        ...
