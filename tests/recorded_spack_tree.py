"""tests/data/spack-tree, the install tree and module roots a real Spack 1.1.0 wrote for
ci/spack-site.sh (see its README): its DAG hashes, and a copy with its site paths made real."""

from __future__ import annotations

import shutil
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "spack-tree"
PYTHON = "nuf5uirr4ez7xwwlf3mfxy6agizyum7g"
OPENMPI = "d2lqwco4vy257a5mvpuwhuqorxdqs2ur"
HDF5 = "bsz4j7zl67o44qrt3tkqvxdlyqnizjii"
ARCH = "linux-debian12-x86_64"


def copy_recorded_site(root: Path) -> Path:
    """A copy of the recorded site at ``root``, with @SITE@ replaced by ``root``."""
    shutil.copytree(DATA, root, ignore=shutil.ignore_patterns("README.md", "record.sh"))
    for path in root.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            if "@SITE@" in text:
                path.write_text(text.replace("@SITE@", str(root)), encoding="utf-8")
    return root
