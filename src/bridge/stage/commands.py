"""``envmod pack``, ``stage`` and ``unstage``: what the front ends call."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..frontends import user_command
from .image import Manifest, is_stale, pack, read_manifest
from .slurm import Job, stage_image, unstage

if TYPE_CHECKING:
    from ..store.root import Store


def pack_env(store: "Store", name: str, image_format: str | None = None) -> Manifest:
    """Pack ``name`` (the caller holds its lock), then write its modules again so that they use
    the staged copy where a job staged it. EasyBuild's modules (a registered env) are its own."""
    from ..build.backends import BACKENDS, get_backend
    from ..emit.modulefile import write_modulefile

    record = store.load(name)
    if record.backend not in BACKENDS:
        raise UsageError(f"cannot pack {name!r}: envs of the {record.backend} backend cannot be packed yet")
    settings = store.settings
    manifest = pack(record, settings.root, get_backend(record.backend, settings), image_format)
    for module_type, path in record.module.files.items():
        if Path(path).parent.resolve().is_relative_to(settings.modules_dir.resolve()):
            write_modulefile(record, module_type, settings.modules_dir, settings.templates, settings.cache_dir,
                             staged_prefix=manifest.staged_prefix)
    return manifest


def stage_env(store: "Store", name: str, *, repack: bool = False, allow_fuse: bool = True) -> list[str]:
    job = Job.current(os.environ, "stage")
    record = store.load(name)
    root = store.settings.root
    manifest = read_manifest(root, name)
    command = user_command()
    if manifest is None:
        raise UsageError(f"{name!r} has no image to stage", hint=f"pack it first: {command} pack {name}")
    if is_stale(manifest, Path(record.prefix)):
        if not repack:
            raise UsageError(f"the image of {name!r} is stale: the env changed after it was packed "
                             f"({manifest.packed_at})", hint=f"{command} pack {name}, or stage --repack")
        with store.lock(name, "packing it"):
            manifest = pack_env(store, name, manifest.format)
    lines = stage_image(root, manifest, job, allow_fuse)
    return [f"staged {name} ({manifest.format}, {manifest.size / 1e6:.1f} MB) at {manifest.staged_prefix}"] + lines


def unstage_env(store: "Store", name: str) -> list[str]:
    job = Job.current(os.environ, "unstage")
    return [f"unstaged {name}"] + unstage(store.settings.root, name, job)
