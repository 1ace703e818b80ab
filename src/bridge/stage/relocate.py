"""The image's copy of an env, made correct at the node-local path it will run from.

A venv names its own path in a few text files: the shebangs of the scripts pip installs, the
activate scripts, ``pyvenv.cfg`` for some tools, ``.pth`` files of editable installs. Those are
rewritten in the copy (never in the env itself); a symlink into the env is pointed at the new
path. A binary file that names the env's path cannot be rewritten safely and is reported: a
backend whose envs carry such files (conda: prefixes in binaries) relocates them itself
(``Backend.relocate_copy``).
"""

from __future__ import annotations

import json
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


# ------------------------------------------------------------------------------ conda envs
def relocate_conda_tree(copy: Path, old: Path, new: Path) -> list[str]:
    """A conda env's copy made correct at ``new``, the way conda relocates a package's files at
    install: a text file naming ``old`` is rewritten; a binary file naming it has each C string
    that holds the prefix rewritten in place and padded with NULs to its old length (as conda
    fills its binary placeholders), which needs ``new`` no longer than ``old``. A file's mode is
    the one its package's ``conda-meta`` record gives (``file_mode``), else a NUL in its first
    8 KiB says binary. Returns the binary files (relative) that name ``old`` and were left as they
    are (``new`` is longer). Symlinks into the env are pointed at ``new``; no size limit (a
    conda env's ``libpython`` names its prefix)."""
    old_b, new_b = os.fsencode(str(old)), os.fsencode(str(new))
    modes = conda_file_modes(copy)
    unrelocatable: list[str] = []
    for dirpath, dirnames, filenames in os.walk(copy):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            relative = str(path.relative_to(copy))
            if path.is_symlink():
                _relink(path, old, new)
            elif name in filenames and not name.endswith(".pyc"):
                if _rewrite_conda_file(path, old_b, new_b, new, modes.get(relative)) is False:
                    unrelocatable.append(relative)
    return sorted(unrelocatable)


def conda_file_modes(prefix: Path) -> dict[str, str]:
    """``file_mode`` ("text"/"binary") of the files conda installed with a prefix placeholder,
    by path relative to the env, from its ``conda-meta/*.json`` records."""
    modes: dict[str, str] = {}
    for meta in (prefix / "conda-meta").glob("*.json"):
        try:
            paths = json.loads(meta.read_text(encoding="utf-8")).get("paths_data", {}).get("paths", [])
        except (OSError, ValueError, AttributeError):
            continue
        for entry in paths if isinstance(paths, list) else []:
            if isinstance(entry, dict) and entry.get("file_mode") in ("text", "binary"):
                modes[str(entry.get("_path"))] = entry["file_mode"]
    return modes


def _rewrite_conda_file(path: Path, old_b: bytes, new_b: bytes, new: Path, mode: str | None) -> bool | None:
    """True: rewritten; None: does not name the env; False: binary, and ``new`` is longer."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if old_b not in data:
        return None
    if (mode or ("binary" if b"\0" in data[:8192] else "text")) == "binary":
        if len(new_b) > len(old_b):
            return False
        data = padded_replace(data, old_b, new_b)
    else:
        data = _fit_shebang(data.replace(old_b, new_b), new)
    file_mode = path.stat().st_mode
    os.chmod(path, file_mode | 0o200)       # conda installs some files read-only
    path.write_bytes(data)
    os.chmod(path, file_mode)
    return True


def padded_replace(data: bytes, old: bytes, new: bytes) -> bytes:
    """``old`` replaced by ``new`` (no longer) in every NUL-terminated string of ``data`` that
    holds it, each string padded with NULs to its old length: every offset in the file stays."""
    out, done = bytearray(), 0
    at = data.find(old)
    while at != -1:
        begin = data.rfind(b"\0", done, at) + 1 or done      # the C string holding this occurrence
        end = data.find(b"\0", at)
        end = len(data) if end == -1 else end
        text = data[begin:end]
        fixed = text.replace(old, new)
        out += data[done:begin] + fixed + b"\0" * (len(text) - len(fixed))
        done = end
        at = data.find(old, done)
    return bytes(out + data[done:])
