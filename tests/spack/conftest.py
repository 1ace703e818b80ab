"""Fixtures of the Spack tier; the helpers are in spack_helpers.py."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from lmod_hierarchy import build_hierarchy
from spack_helpers import Spack, require_spack, site_facts


@pytest.fixture
def spack(tmp_path: Path, envmod_root: Path) -> Spack:
    return Spack(require_spack(), envmod_root, tmp_path / "cache")


@pytest.fixture
def site() -> dict:
    return site_facts(require_spack())


@pytest.fixture(scope="session")
def lmod_hierarchy() -> Iterator[dict]:
    """A private Spack site whose Lmod tree has HDF5 in OpenMPI's subtree (lmod_hierarchy.py),
    built once per run (about a minute) for every front end's test. In a world-readable
    directory: the EasyBuild test runs ``eb`` as an unprivileged user over it."""
    exe = require_spack()
    base = Path(tempfile.mkdtemp(prefix="envmod-hier-"))
    os.chmod(base, 0o755)
    try:
        yield build_hierarchy(exe, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
