"""``envmod list``'s rows, kept in a cache beside the envs so that a root of many envs lists fast.

Measured (bench/scale): a record of an env with mpi4py and h5py is ~17 KB of YAML (its link
evidence), and parsing 1,000 of them took 2.3 s of CPU, against 0.3 s wanted for the whole
``list``. A row needs a few fields only, so each row is kept in ``<root>/.envmod/list-cache.json``
keyed by its record file's identity (device, inode, size, modification and change times): records
are replaced by a rename (a new inode), never edited in place, so a changed record is a new key
and is parsed again. The cache is written atomically, only when something changed, and only
where the user may write (a colleague's root is listed without it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EnvmodError
from ..fsutil import effective_user
from .record import EnvRecord
from .shared import member_entry_path, member_link_root, read_member_entry

if TYPE_CHECKING:
    from .root import Store

CACHE_FILE = "list-cache.json"
CACHE_SCHEMA = 2      # 2: rows name the env's kernels


def row_of(name: str, record: EnvRecord | EnvmodError) -> dict[str, Any]:
    if isinstance(record, EnvmodError):
        return {"name": name, "error": record.one_line()}
    return {"name": name, "module": record.module.name, "backend": record.backend,
            "python": record.python.version, "python_module": record.python.module,
            "packages": len(record.packages), "created": record.created.at,
            "prefix": record.prefix, "description": record.description,
            "kernels": [k.get("name") for k in record.kernels]}


def _identity(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("schema") != CACHE_SCHEMA or not isinstance(data.get("rows"), dict):
        return {}
    return data["rows"]


def list_rows(store: "Store") -> list[dict[str, Any]]:
    """One row per env under the store's root, in name order; a record that cannot be read is a
    row with its ``error`` (never cached: it is read again next time)."""
    cache_path = store.settings.state_dir / CACHE_FILE
    cached = _read_cache(cache_path)
    fresh: dict[str, Any] = {}
    rows = []
    for name in store.names():
        key = _identity(store.record_path(name))
        hit = cached.get(name)
        if key is not None and isinstance(hit, dict) and hit.get("key") == key:
            row = hit["row"]
        else:
            try:
                row = row_of(name, store.load(name))
            except EnvmodError as exc:
                row = row_of(name, exc)
        if key is not None and "error" not in row:
            fresh[name] = {"key": key, "row": row}
        rows.append(_with_member_kernels(store, name, row))
    if fresh != cached:
        _write_cache(cache_path, fresh)
    return rows


def _with_member_kernels(store: "Store", name: str, row: dict[str, Any]) -> dict[str, Any]:
    """A member's link to a group-shared env: the kernels are this user's own for it, registered
    in the shared root (not the maintainer's, which its record names); read each time, not cached
    with the record's row."""
    shared_root = member_link_root(store.env_path(name))
    if shared_root is None or "error" in row:
        return row
    entry = read_member_entry(member_entry_path(shared_root, name, effective_user()))
    return {**row, "kernels": [Path(k).name for k in entry.kernels] if entry else []}


def _write_cache(path: Path, rows: dict[str, Any]) -> None:
    from ..fsutil import atomic_write_text

    if not os.access(path.parent if path.parent.is_dir() else path.parent.parent, os.W_OK):
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"schema": CACHE_SCHEMA, "rows": rows}))
    except OSError:
        pass        # a cache: listing works without it

