"""The image's copy of an env, made correct at the node-local path it will run from.

A venv names its own path in a few text files: the shebangs of the scripts pip installs, the
activate scripts, ``pyvenv.cfg`` for some tools, ``.pth`` files of editable installs. Those are
rewritten in the copy (never in the env itself); a symlink into the env is pointed at the new
path. A binary file that names the env's path cannot be rewritten safely and is reported: a
backend whose envs carry such files (conda: prefixes in binaries) relocates them itself
(``Backend.relocate_copy``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..build.backends.venv import _SHEBANG_MAX, script_shebang

#: text files larger than this are not read for the env's path (no launcher or config is this big)
_TEXT_MAX = 4 << 20
#: files of these kinds are byte code or archives: they name the env's path only in data that is
#: rewritten another way (byte code is compiled again for the new path)
_SKIP_SUFFIXES = (".pyc", ".whl", ".zip", ".gz")


def relocate_tree(copy: Path, old: Path, new: Path) -> list[str]:
    """Rewrite every text file and symlink under ``copy`` that names ``old`` to name ``new``;
    return the binary files (relative paths) that name ``old`` and were left as they are."""
    old_b, new_b = os.fsencode(str(old)), os.fsencode(str(new))
    unrelocatable: list[str] = []
    for dirpath, dirnames, filenames in os.walk(copy):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                _relink(path, old, new)
            elif name in filenames and not name.endswith(_SKIP_SUFFIXES):
                if _rewrite_file(path, old_b, new_b, new) is False:
                    unrelocatable.append(str(path.relative_to(copy)))
    return sorted(unrelocatable)


def _relink(link: Path, old: Path, new: Path) -> None:
    target = os.readlink(link)
    if target == str(old) or target.startswith(str(old) + "/"):
        link.unlink()
        os.symlink(str(new) + target[len(str(old)):], link)


def _rewrite_file(path: Path, old_b: bytes, new_b: bytes, new: Path) -> bool | None:
    """True: rewritten; None: does not name the env; False: a binary file that names it."""
    try:
        if path.stat().st_size > _TEXT_MAX:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if old_b not in data:
        return None
    if b"\0" in data[:8192]:
        return False
    data = data.replace(old_b, new_b)
    data = _fit_shebang(data, new)
    mode = path.stat().st_mode
    path.write_bytes(data)
    os.chmod(path, mode)
    return True


def _fit_shebang(data: bytes, new: Path) -> bytes:
    """A script whose #! line became longer than the kernel reads starts through /bin/sh, as pip's
    own launchers do (the venv backend's ``script_shebang``)."""
    if not data.startswith(b"#!"):
        return data
    first, sep, rest = data.partition(b"\n")
    if len(first) <= _SHEBANG_MAX:
        return data
    interpreter = os.fsdecode(first[2:].strip())
    return script_shebang(Path(interpreter)).encode() + sep + rest
