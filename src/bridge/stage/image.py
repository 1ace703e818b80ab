"""``envmod pack``: one image of an env, made to run from a node-local path, and its manifest.

Layout, beside the envs under the root::

    <root>/images/<name>.sqfs        squashfs (mksquashfs), or <name>.tar.gz where it is missing
    <root>/images/<name>.json        the manifest: what the image holds and where it runs from

The image is a copy of the env made correct at its node-local path (``staged_prefix``:
``<stage base>/envmod-stage/<user>/<name>-<image id>``; the base is ``$ENVMOD_STAGE_BASE`` at pack
time, default ``/tmp``), with every module's byte code compiled in advance for that path (no rank
writes a ``.pyc``; the hash-based pycs are never checked against their sources on a read-only
image). The env itself is never changed.

Stale: the manifest keeps a fingerprint of the env (:func:`fingerprint`): the record's bytes and
the modification times of the env directory, ``bin/``, each ``site-packages`` and every entry in
it. Installing, removing or upgrading a package (pip, uv, ``envmod rebuild``, ``create --force``)
changes some of them; editing a file inside an installed package in place does not (pack again
after such an edit). ``envmod check`` and ``envmod stage`` compare it with the env as it is now.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BuildError, ConfigError, RecordError, UsageError
from ..fsutil import atomic_write_text, current_umask, file_sha256, new_dir, remove_tree
from ..store.record import RECORD_FILE, EnvRecord

MANIFEST_SCHEMA = 1
SQUASHFS, TARBALL = "squashfs", "tar.gz"
SUFFIXES = {SQUASHFS: ".sqfs", TARBALL: ".tar.gz"}
DEFAULT_STAGE_BASE = "/tmp"


@dataclass
class Manifest:
    """What an image holds and where it runs from: ``<root>/images/<name>.json``."""

    name: str
    format: str                 # "squashfs" or "tar.gz"
    image: str                  # the image's file name, beside the manifest
    sha256: str                 # of the image file: its content hash
    size: int                   # bytes of the image
    files: int                  # entries in the env (files, directories, links) packed into it
    env_bytes: int              # bytes of the env's regular files
    image_id: str               # in the node-local path: a new pack of a changed env runs elsewhere
    staged_prefix: str          # where the image's env runs from on a node
    stage_base: str
    user: str
    shared_prefix: str          # the env on the shared file system
    fingerprint: str            # of the env when packed (see the module docstring)
    modules: list[str]          # the central modules the env's module loads (from the record)
    python: str
    backend: str
    packed_at: str
    pack_seconds: float
    envmod_version: str = __version__
    schema: int = MANIFEST_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def images_dir(root: Path) -> Path:
    return root / "images"


def manifest_path(root: Path, name: str) -> Path:
    return images_dir(root) / f"{name}.json"


def read_manifest(root: Path, name: str) -> Manifest | None:
    """The env's manifest, or None when it was never packed."""
    path = manifest_path(root, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema") != MANIFEST_SCHEMA:
            raise RecordError(f"{path} has manifest schema {data.get('schema')!r}; this envmod reads "
                              f"{MANIFEST_SCHEMA}", hint=f"pack it again: envmod pack {name}")
        return Manifest(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, AttributeError) as exc:
        raise RecordError(f"the image manifest {path} cannot be read: {exc}",
                          hint=f"pack it again: envmod pack {name}") from None


def fingerprint(prefix: Path) -> str:
    """A cheap fingerprint of the env at ``prefix``: the record's bytes, and the modification
    times of the env, ``bin/``, each ``site-packages`` and each of its entries (a few dozen stats)."""
    digest = hashlib.sha256((prefix / RECORD_FILE).read_bytes())
    watched = [prefix, prefix / "bin"]
    for site in sorted(prefix.glob("lib/python*/site-packages")):
        watched.append(site)
        watched.extend(sorted(site.iterdir()))
    for path in watched:
        try:
            stat = path.lstat()
        except FileNotFoundError:
            continue
        digest.update(f"{path.relative_to(prefix)}\0{stat.st_mtime_ns}\0{stat.st_size}\n".encode())
    return digest.hexdigest()


def is_stale(manifest: Manifest, prefix: Path) -> bool:
    return manifest.fingerprint != fingerprint(prefix)


def fresh_staged_prefix(root: Path, record: EnvRecord) -> str | None:
    """Where the env's module should look for a staged copy: the node-local path of its image
    when that image is up to date; None when it was never packed or changed since."""
    try:
        manifest = read_manifest(root, record.name)
    except RecordError:
        return None
    if manifest is None or not (images_dir(root) / manifest.image).is_file():
        return None
    try:
        return None if is_stale(manifest, Path(record.prefix)) else manifest.staged_prefix
    except OSError:
        return None


def stage_base() -> str:
    base = os.environ.get("ENVMOD_STAGE_BASE") or DEFAULT_STAGE_BASE
    if not os.path.isabs(base):
        raise UsageError(f"ENVMOD_STAGE_BASE={base!r} is not an absolute path")
    return os.path.normpath(base)


def staged_prefix_for(base: str, user: str, name: str, image_id: str) -> str:
    return f"{base}/envmod-stage/{user}/{name}-{image_id}"


# ------------------------------------------------------------------------------ packing
def pack(record: EnvRecord, root: Path, backend: Any, image_format: str | None = None) -> Manifest:
    """Pack the env of ``record`` into ``<root>/images``; the caller holds the env's lock."""
    started = time.monotonic()
    prefix = Path(record.prefix)
    real_prefix = Path(os.path.realpath(prefix))
    image_format = image_format or (SQUASHFS if shutil.which("mksquashfs") else TARBALL)
    print_ = fingerprint(prefix)
    base, user = stage_base(), getpass.getuser()
    image_id = hashlib.sha256(f"{print_}\0{base}\0{user}".encode()).hexdigest()[:12]
    staged = staged_prefix_for(base, user, record.name, image_id)
    _check_staged_path(staged)
    out_dir = images_dir(root)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        sweep_leftovers(out_dir, record.name)
        work = new_dir(out_dir, f".tmp-{record.name}-")
    except OSError as exc:
        raise ConfigError(f"cannot write the image of {record.name!r} to {out_dir}: {exc.strerror}",
                          hint="pack an env under a root you can write; nothing was changed") from None
    try:
        copy = work / "env"
        shutil.copytree(real_prefix, copy, symlinks=True)
        left = backend.relocate_copy(copy, prefix, Path(staged))
        if real_prefix != prefix:
            left = backend.relocate_copy(copy, real_prefix, Path(staged))
        if left:
            raise BuildError(f"cannot pack {record.name!r}: {len(left)} binary file(s) name the env's path "
                             f"and cannot be relocated, e.g. {left[0]}")
        _compile_bytecode(record, copy, staged)
        files, env_bytes = _count(copy)
        image = work / f"image{SUFFIXES[image_format]}"
        (_mksquashfs if image_format == SQUASHFS else _tarball)(copy, image)
        os.chmod(image, 0o666 & ~current_umask())
        manifest = Manifest(
            name=record.name, format=image_format, image=f"{record.name}{SUFFIXES[image_format]}",
            sha256=file_sha256(image), size=image.stat().st_size, files=files, env_bytes=env_bytes,
            image_id=image_id, staged_prefix=staged, stage_base=base, user=user, shared_prefix=str(prefix),
            fingerprint=print_, modules=list(record.module.depends_on), python=record.python.version,
            backend=record.backend, packed_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            pack_seconds=round(time.monotonic() - started, 2))
        os.replace(image, out_dir / manifest.image)
        for other in SUFFIXES.values():         # a previous pack in the other format
            if other != SUFFIXES[image_format]:
                (out_dir / f"{record.name}{other}").unlink(missing_ok=True)
        atomic_write_text(manifest_path(root, record.name), json.dumps(manifest.to_dict(), indent=2) + "\n",
                          0o666 & ~current_umask())
        return manifest
    finally:
        remove_tree(work)


def remove_image(root: Path, name: str) -> None:
    """Remove the env's image and manifest (``envmod remove``): the manifest first, so no reader
    finds a manifest without its image."""
    manifest_path(root, name).unlink(missing_ok=True)
    for suffix in SUFFIXES.values():
        (images_dir(root) / f"{name}{suffix}").unlink(missing_ok=True)


def sweep_leftovers(out_dir: Path, name: str) -> None:
    """Drop what an interrupted pack of ``name`` left (its work directory); the env's lock is held."""
    for leftover in out_dir.glob(f".tmp-{name}-*"):
        remove_tree(leftover)


def _check_staged_path(staged: str) -> None:
    from ..build.backends.venv import _check_activate_path

    _check_activate_path(Path(staged))


def _compile_bytecode(record: EnvRecord, copy: Path, staged: str) -> None:
    """Byte code for every module of the copy, by the env's own Python, naming the staged path
    (``-s``/``-p``), hash-based and never checked against its source: the image is read-only."""
    command = [record.python.executable, "-I", "-m", "compileall", "-q", "-f", "-j", "0", "-s", str(copy),
               "-p", staged, "--invalidation-mode", "unchecked-hash", str(copy / "lib")]
    proc = subprocess.run(command, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL,
                          timeout=1800)
    # compileall exits 1 when a file does not compile (a package's Python 2 test data): that
    # file stays without byte code, as pip leaves it.
    if proc.returncode not in (0, 1):
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise BuildError(f"compiling the byte code of {record.name!r} with {record.python.executable} failed: {last}")


def _count(copy: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(copy):
        files += len(dirnames) + len(filenames)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                size += os.path.getsize(path)
    return files, size


def _mksquashfs(copy: Path, image: Path) -> None:
    proc = subprocess.run(["mksquashfs", str(copy), str(image), "-noappend", "-quiet", "-no-progress"],
                          capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL, timeout=1800)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no message"])[-1]
        raise BuildError(f"mksquashfs failed: {last}")


def _tarball(copy: Path, image: Path) -> None:
    with tarfile.open(image, "w:gz", compresslevel=1) as tar:
        tar.add(copy, arcname=".")


