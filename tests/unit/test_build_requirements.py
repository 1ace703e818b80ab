"""build_requirements: the [build-system] requires of an sdist, read without unpacking it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from bridge.build.install import build_requirements


def _sdist(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        tf.addfile(member, io.BytesIO(data) if data else None)
    return path


def test_requires_are_read_from_the_sdist(tmp_path):
    text = b'[build-system]\nrequires = ["setuptools>=61", "cython"]\n'
    member = tarfile.TarInfo("pkg-1.0/pyproject.toml")
    member.size = len(text)
    assert build_requirements(_sdist(tmp_path / "pkg-1.0.tar.gz", member, text)) == ["setuptools>=61", "cython"]


def test_a_pyproject_that_is_no_regular_file_counts_as_none(tmp_path):
    # tarfile gives no file object for a directory: the default applies instead of a traceback
    member = tarfile.TarInfo("pkg-1.0/pyproject.toml")
    member.type = tarfile.DIRTYPE
    assert build_requirements(_sdist(tmp_path / "pkg-1.0.tar.gz", member)) == ["setuptools>=40.8.0", "wheel"]
