"""Fixtures of the Spack tier; the helpers are in spack_helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from spack_helpers import Spack, require_spack, site_facts


@pytest.fixture
def spack(tmp_path: Path, envmod_root: Path) -> Spack:
    return Spack(require_spack(), envmod_root, tmp_path / "cache")


@pytest.fixture
def site() -> dict:
    return site_facts(require_spack())
