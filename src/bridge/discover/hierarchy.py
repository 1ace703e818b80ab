"""The Lmod hierarchy: which module opens the MODULEPATH subtree another lives in.

Every session (create, rebuild, and each front end: the envmod command, ``spack envmod``,
EasyBuild) orders the env's modules with :func:`load_order`, so its module loads them in a fresh
shell that holds only the site's root dirs. What a module opens and where it lives are the
``spack_unlocks`` and ``spack_modulepath`` facts (:mod:`bridge.spack_stack` reads them from
Spack's configuration or modulefiles); a module without them is in no hierarchy.

Works on discovered modules (``stack.CentralModule``) and recorded ones
(``record.CentralModuleRecord``) alike: both have a ``name`` and ``facts``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Sequence, TypeVar

if TYPE_CHECKING:
    from ..store.record import EnvRecord
    from .stack import CentralStack



class _Placed(Protocol):
    """A module as the hierarchy sees it: a name, and facts that may say where it lives and
    which subtrees it opens."""

    @property
    def name(self) -> str: ...

    @property
    def facts(self) -> Mapping[str, Any]: ...


M = TypeVar("M", bound=_Placed)


def modulepath_of(path: str, use_name: str) -> str:
    """The directory that must be in MODULEPATH for ``module load use_name`` to find the modulefile
    at ``path``: as many levels up as the name has parts (``Core`` for ``openmpi/4.1.4``, not the
    module root, in an Lmod hierarchy). A name deeper than its path (malformed): the file's folder."""
    depth = len(Path(use_name).parts)
    parents = Path(path).parents
    return str(parents[depth - 1]) if 0 < depth <= len(parents) else str(Path(path).parent)


def _where(module) -> str | None:
    where = module.facts.get("spack_modulepath")
    return os.path.normpath(where) if where else None


def subtree_openers(modules: Iterable[M]) -> dict[str, M]:
    """MODULEPATH dir -> the module that opens it. A dir a module opens where it lives itself is
    left out: Spack's module of a Core compiler re-opens ``Core``, which it cannot be needed for."""
    opener: dict[str, M] = {}
    for module in modules:
        for directory in module.facts.get("spack_unlocks") or ():
            directory = os.path.normpath(directory)
            if directory != _where(module):
                opener.setdefault(directory, module)
    return opener


def load_order(stack: CentralStack, wanted: Sequence[M]) -> list[M]:
    """``wanted`` plus every module of ``stack`` that opens the subtree one of them lives in, each
    after the module that opens its subtree: in a fresh shell with only the site's root dirs in
    MODULEPATH, loading them in this order finds every one. Without a hierarchy: ``wanted``."""
    opener = subtree_openers(stack.modules)
    out: list = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def visit(module) -> None:
        if module.name in placed or module.name in visiting:
            return
        visiting.add(module.name)
        where = _where(module)
        parent = opener.get(where) if where else None
        if parent is not None and parent.name != module.name:
            visit(parent)
        visiting.discard(module.name)
        placed.add(module.name)
        out.append(module)

    for module in wanted:
        visit(module)
    return out


def _modulepaths(modules: Sequence, names: Sequence[str], subtrees: bool) -> list[str]:
    opened = set(subtree_openers(modules))
    by_name = {m.name: m for m in modules}
    out: list[str] = []
    for name in names:
        module = by_name.get(name)
        where = module.facts.get("spack_modulepath") if module is not None else None
        if where and (subtrees or os.path.normpath(where) not in opened) and where not in out:
            out.append(where)
    return out


def root_modulepaths(stack: CentralStack, modules: Sequence[str]) -> list[str]:
    """The MODULEPATH dirs a user needs before loading ``modules`` (those no other opens)."""
    return _modulepaths(stack.modules, modules, subtrees=False)


def record_modulepaths(record: EnvRecord, subtrees: bool = False, names: Sequence[str] | None = None) -> list[str]:
    """The MODULEPATH dirs the modules an env loads need (the site's Core dir, not the subtrees
    its MPI opens), from the record alone: what ``check`` adds so the names resolve.
    ``subtrees``: every dir they live in, so ``module show`` finds each without loading the
    modules that open them (what ``rebuild`` needs to query them). ``names``: those modules
    instead of the ones the env loads."""
    return _modulepaths(record.central_modules, record.module.depends_on if names is None else names, subtrees)


def modulepath_with_record(record: EnvRecord, modulepath: str, subtrees: bool = False,
                           names: Sequence[str] | None = None) -> str:
    """``modulepath`` (a MODULEPATH value) with the dirs :func:`record_modulepaths` names put
    first, those it lacks, so the env's Spack module names resolve in a shell that lacks them."""
    have = [p for p in modulepath.split(":") if p]
    return ":".join([r for r in record_modulepaths(record, subtrees, names) if r not in have] + have)
