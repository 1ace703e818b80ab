"""What tests/unit/test_spacktree.py asks of a Spack module index beyond what envmod needs, kept out of
the library (bridge.spack.tree): nothing in envmod looks a module up by anything but its entry.

``use_name`` and ``modulefile`` read one spec's entry and fail the test when the index has none;
``modulepath_dirs`` says where the indexed modules are loadable from, so a test can check that the
recorded site put them where the Lmod hierarchy (or the flat Tcl layout) expects.
"""

from __future__ import annotations

from pathlib import Path

from bridge.discover.hierarchy import modulepath_of
from bridge.spack.tree import ModuleEntry, ModuleIndex, SpackSpec


def _entry(index: ModuleIndex, spec_or_hash: SpackSpec | str) -> ModuleEntry:
    entry = index.module_for(spec_or_hash)
    assert entry is not None, f"{index.root} has no module for {spec_or_hash}"
    return entry


def use_name(index: ModuleIndex, spec_or_hash: SpackSpec | str) -> str:
    """The name that loads the module of a spec (or DAG hash)."""
    return _entry(index, spec_or_hash).use_name


def modulefile(index: ModuleIndex, spec_or_hash: SpackSpec | str) -> Path:
    """The modulefile Spack wrote for a spec (or DAG hash)."""
    return _entry(index, spec_or_hash).path


def modulepath_dirs(index: ModuleIndex) -> list[Path]:
    """Every distinct MODULEPATH directory the indexed modules live in, sorted: with an Lmod hierarchy
    the ``Core`` (or ``<mpi>/<version>/Core``) folder, not the module root."""
    return sorted({Path(modulepath_of(str(e.path), e.use_name)) for e in index.entries()})
