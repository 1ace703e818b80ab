"""A member's own modulefile for a group-shared env: ``envmod module NAME --shared DIR``.

The module is the shared env's (rendered from its record, so it loads the same central
modules and points at the same prefix) but written in the member's own root, beside their own
envs' modules. There the member's root holds a link ``envs/NAME`` to the shared env, so that
``list``, ``show`` and ``remove`` see it; and the shared root registers it (store/shared.py) so
that the maintainer knows who still uses the env. The registration is made first and removed
last: the maintainer never misses a member's module that exists.

A member's Jupyter kernel for it (``envmod kernel NAME`` on that link) is theirs the same way:
installed in their Jupyter directory, loading their own module, and registered in the same entry
(first, and unregistered last), so that their ``remove`` removes it and the maintainer's names it.

Both are registered holding the shared env's lock shared (``Store.shared_lock``), the record read
again under it; the maintainer's ``remove`` holds it exclusively while it checks the entries and
removes. So a registration is either seen by that check or finds the env gone (one line, nothing
left), and whichever comes second while the other holds the lock is told the env is busy.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
from pathlib import Path

from ..config import Settings, check_module_type
from ..errors import EnvExists, UsageError
from ..frontends import user_command
from ..fsutil import atomic_write_text, effective_user
from ..store.root import Store
from ..store.shared import (
    add_member_entry,
    check_member_request,
    member_entry_path,
    read_member_entry,
    remove_member_entry,
    set_member_kernels,
)
from .modulefile import modulefile_path, render_modulefile


def write_member_module(settings: Settings, shared_root: Path | str, name: str, module_type: str | None) -> Path:
    """Write this user's module for the shared env ``name`` under ``shared_root`` into their own
    root (``settings``); return its path. Run again, it rewrites it (another ``module_type`` adds
    that syntax's file)."""
    shared_store = Store(settings.with_root(shared_root))
    shared_root = shared_store.settings.root
    check_member_request(shared_store.load(name), shared_root)
    own = Store(settings)
    target = shared_store.env_path(name)
    link = own.env_path(name)
    if os.path.lexists(link) and not (link.is_symlink() and Path(os.readlink(link)) == target):
        raise EnvExists(f"you have an environment named {name!r} already at {link}",
                        hint=f"'{user_command()} remove {name}' it first; nothing was changed")
    own.check_writable(name)
    with own.lock(name, "writing your module for a shared environment"), shared_store.shared_lock(name):
        # The shared env's lock, held shared until the module is registered and written: its
        # maintainer's remove cannot come between reading its record (again, under the lock: it
        # may have gone since) and the registration, which that remove would then not see.
        record = shared_store.load(name)
        check_member_request(record, shared_root)
        module_type = check_module_type(module_type or record.module.type)
        if module_type != record.module.type:
            from ..spack.stack import with_module_type

            record = with_module_type(record, module_type)
        text = render_modulefile(record, module_type, settings.templates, settings.cache_dir)
        path = modulefile_path(own.settings.modules_dir, record, module_type)
        # for the undo below: a failed rewrite keeps the entry of the module written before
        had_entry = read_member_entry(member_entry_path(shared_root, name, effective_user())) is not None
        add_member_entry(shared_root, name, path, own.settings.root)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text, 0o644)
            _link(link, target)
        except BaseException:
            if not had_entry:
                remove_member_entry(shared_root, name)
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
    return path


def _link(link: Path, target: Path) -> None:
    """``link`` -> ``target``, put in place by a rename (an older link to it is replaced at once)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.link-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def install_member_kernel(settings: Settings, shared_root: Path, name: str, kernels_dir: Path,
                          display_name: str | None = None) -> dict[str, str]:
    """Install this member's Jupyter kernel for the shared env ``name`` in ``kernels_dir``: its
    launcher loads the member's own module (from their root); registered in their entry."""
    from .kernel import install_kernel, kernel_name

    shared_store = Store(settings.with_root(shared_root))
    with shared_store.shared_lock(name):       # as for the module: no remove between reading and registering
        record = shared_store.load(name)
        entry = read_member_entry(member_entry_path(shared_root, name, effective_user()))
        if entry is None or not entry.modules:
            raise UsageError(f"you have no module of your own for the shared environment {name!r}",
                             hint=f"'{user_command()} module {name} --shared {shared_root}' writes one; nothing was changed")
        mine = copy.deepcopy(record)
        mine.module.files = {("lmod" if m.endswith(".lua") else "tcl"): m for m in entry.modules if os.path.isfile(m)}
        directory = str(kernels_dir / kernel_name(name))
        set_member_kernels(shared_root, name, [*entry.kernels, directory])       # registered first
        try:
            return install_kernel(mine, kernels_dir, settings.modules_dir, display_name, settings.templates,
                                  settings.cache_dir)
        except BaseException:
            if directory not in entry.kernels:
                set_member_kernels(shared_root, name, entry.kernels)
            raise


def remove_member_kernels(shared_root: Path, name: str) -> list[str]:
    """Remove this member's kernels registered for the shared env ``name`` that envmod made for an
    env of that shared root (the env itself may be gone); their paths."""
    from .kernel import made_for

    entry = read_member_entry(member_entry_path(shared_root, name, effective_user()))
    envs = shared_root / "envs"
    removed = []
    for kernel in entry.kernels if entry else []:
        prefix = made_for(Path(kernel))
        if prefix is not None and envs in Path(prefix).parents:
            shutil.rmtree(kernel)
            removed.append(kernel)
    return removed
