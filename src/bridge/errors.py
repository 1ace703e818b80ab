"""One hierarchy of errors, each with a message a user can act on.

The CLI turns any :class:`EnvmodError` into one line on stderr and its ``exit_code``;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EnvmodError(Exception):
    """Base of every error envmod reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return text


class UsageError(EnvmodError):
    """Bad input on the command line or in a config file."""

    exit_code = 2


class InvalidName(UsageError):
    pass


class ConfigError(UsageError):
    pass


class SharedEnvRefused(UsageError):
    """A change to a group-shared env that only its maintainer may make, or while members use it."""


class DiscoveryError(EnvmodError):
    """The central stack (module system, Python, MPI, HDF5) could not be found or read."""

    exit_code = 3


class NoModuleSystem(DiscoveryError):
    pass


class NoPython(DiscoveryError):
    pass


class PlanError(EnvmodError):
    """The request cannot be satisfied by what the site provides."""

    exit_code = 3


class MissingCentralKind(PlanError):
    """A package must be compiled against a kind of central module (mpi, hdf5) that is not there;
    front ends that know the stack another way (EasyBuild's dependencies) name what to add."""

    def __init__(self, package: str, kind: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.package = package
        self.kind = kind


class EnvExists(EnvmodError):
    exit_code = 4


class EnvNotFound(EnvmodError):
    exit_code = 4


class EnvBusy(EnvmodError):
    """Another envmod process holds the environment's lock."""

    exit_code = 5


class RecordError(EnvmodError):
    """An environment record is missing, unreadable, or of a newer schema."""

    exit_code = 6


class BuildError(EnvmodError):
    """A step of creating an environment failed; nothing was put in place."""

    exit_code = 7

    def __init__(self, message: str, *, log: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.log = log

    def one_line(self) -> str:
        text = super().one_line()
        if self.log:
            text += f"; full log: {self.log}"
        return text


class StageError(EnvmodError):
    """Staging a packed env in a Slurm job failed (sbcast, a step, a mount or unpack on a node)."""

    exit_code = 8


class Interrupted(BuildError):
    exit_code = 130
