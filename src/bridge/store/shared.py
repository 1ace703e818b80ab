"""Group-shared environments: ``envmod create NAME --shared DIR [--group G]``.

A shared root is an envmod root like any other (``DIR/envs``, ``DIR/modules``, ``DIR/logs``,
``DIR/.envmod``) that belongs to one group, the root's own group. Permissions:

* ``DIR`` and ``DIR/.envmod``: setgid, group read/execute, not group-writable.
* ``envs``, ``modules``, ``logs`` and ``.envmod/{locks,staging,trash,members}``: setgid, sticky
  and group-writable (``chmod 3770`` plus what the umask lets others have, never write), so any
  member may put an env of their own in the root, and none can rename or remove another's:
  the same layout as a group's wheel cache (``build/wheelcache.py``).
* An env, its module directory and its logs: the maintainer's (whoever created it: recorded),
  setgid, group read/execute always, group write never, world write never; otherwise the
  maintainer's umask (077 keeps others out, 022 lets them read). Only the maintainer can
  change, rebuild or remove it; envmod refuses a member in one line naming the maintainer.

Members load it with ``module use DIR/modules``, or get their own modulefile for it in their
own root (``envmod module NAME --shared DIR``): a link ``<their root>/envs/NAME`` to
``DIR/envs/NAME`` and the module beside their own envs' modules. Each such member module is
registered in ``DIR/.envmod/members/<user>/<NAME>.yaml``: a directory of that user's, in the
sticky ``members`` directory, so a member can add and remove only their own entries, and the
maintainer's ``remove`` sees who still points at the env (and refuses unless ``--force``).
An entry's user is the owner of its file, never the name it is filed under.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..config import Settings, check_root
from ..errors import ConfigError, SharedEnvRefused, UsageError
from ..frontends import user_command
from ..fsutil import atomic_write_text, current_umask, effective_user, user_name
from .record import EnvRecord, SharedRecord

# Directories of a shared root every member may add to (sticky: none may remove another's).
GROUP_DIRS = ("envs", "modules", "logs", ".envmod/locks", ".envmod/staging", ".envmod/trash", ".envmod/members")
# Directories of a shared root members read only.
READ_DIRS = (".", ".envmod")
MEMBERS = ".envmod/members"
_NOTHING_CHANGED = "nothing was changed"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _my_gids() -> set[int]:
    return set(os.getgroups()) | {os.getegid()}


# ---- permissions -----------------------------------------------------------------------------

def shared_umask(umask: int) -> int:
    """The umask a shared env is made under: the maintainer's, except that the group always
    reads and executes, and neither the group nor others ever write."""
    return (umask | 0o022) & ~0o050


@contextlib.contextmanager
def shared_umask_in_effect() -> Iterator[None]:
    """Everything made inside (env, module directory, logs) is made as :func:`shared_umask` says."""
    old = os.umask(shared_umask(current_umask()))
    try:
        yield
    finally:
        os.umask(old)


def share_tree(top: Path, gid: int) -> None:
    """Give ``top`` and everything in it that is this user's the shared env's modes: group
    ``gid``, setgid directories, group read (and execute where the owner may), no group or
    world write, others no more than the umask lets them. Files a tool wrote with modes of its
    own (pip's 0755 launchers, files copied with their modes) are caught here."""
    me = os.geteuid()
    others_masked = current_umask() & 0o007
    for path in [top, *(Path(d) / n for d, dirs, files in os.walk(top) for n in dirs + files)]:
        st = path.lstat()
        if st.st_uid != me or stat.S_ISLNK(st.st_mode):
            continue
        if st.st_gid != gid:
            os.chown(path, -1, gid, follow_symlinks=False)
        mode = stat.S_IMODE(st.st_mode) | stat.S_IRGRP
        if stat.S_ISDIR(st.st_mode):
            mode |= stat.S_ISGID | stat.S_IXGRP
        elif mode & stat.S_IXUSR:
            mode |= stat.S_IXGRP
        mode &= ~(stat.S_IWGRP | stat.S_IWOTH | others_masked)
        if mode != stat.S_IMODE(path.lstat().st_mode):
            os.chmod(path, mode)


def share_env_tree(top: Path, shared: SharedRecord) -> None:
    """:func:`share_tree` for an env shared as ``shared`` says."""
    try:
        gid = grp.getgrnam(shared.group).gr_gid
    except KeyError:
        raise ConfigError(f"the group {shared.group} this environment is shared with no longer exists") from None
    share_tree(top, gid)


def shared_file_mode() -> int:
    """A shared env's modulefile: the group reads, others as the maintainer's umask says."""
    return 0o644 & ~(current_umask() & 0o007)


def _dir_mode(group_writable: bool, umask: int) -> int:
    others = 0o005 & ~umask                    # others read as the umask says, never write
    return (0o3770 if group_writable else 0o2750) | others


# ---- opening a shared root -----------------------------------------------------------------

def sharing_group(root: Path, group: str | None) -> int:
    """The gid a shared root at ``root`` is for: ``--group``, else the root's group when it
    exists, else this user's primary group. The user must be a member (one line otherwise)."""
    existing = root.stat().st_gid if root.is_dir() else None
    if group is None:
        gid = existing if existing is not None else os.getegid()
    else:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError(f"--group {group}: no such group", hint=_NOTHING_CHANGED) from None
        if existing is not None and existing != gid:
            raise ConfigError(f"shared root {root} belongs to group {_group_name(existing)}, not {group}",
                              hint=f"a shared root serves one group: choose another --shared directory; "
                              f"{_NOTHING_CHANGED}")
    if gid not in _my_gids():
        raise ConfigError(f"you ({effective_user()}) are not a member of group {_group_name(gid)}, "
                          f"so you cannot share {root} with it",
                          hint=f"'id -Gn' lists your groups; {_NOTHING_CHANGED}")
    return gid


def check_shared_root(root: Path) -> None:
    """Refuse, before anything is made, a shared root this user cannot write or whose existing
    directories would let members (or anyone) change each other's envs."""
    check_root(root)
    for rel in READ_DIRS + GROUP_DIRS:
        directory = (root / rel) if rel != "." else root
        if directory.is_dir():
            mode = directory.stat().st_mode
            if mode & stat.S_IWOTH:
                raise ConfigError(f"shared root {root}: {directory} is world-writable",
                                  hint=f"'chmod o-w' it; {_NOTHING_CHANGED}")
            if mode & stat.S_IWGRP and not mode & stat.S_ISVTX:
                raise ConfigError(f"shared root {root}: {directory} is group-writable but not sticky: members "
                                  "could remove each other's environments", hint=f"'chmod +t' it; {_NOTHING_CHANGED}")
            if rel in GROUP_DIRS and not os.access(directory, os.W_OK | os.X_OK):
                raise _unwritable(root, directory)
            continue
        existing = next(d for d in directory.parents if d.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise _unwritable(root, existing)


def _unwritable(root: Path, path: Path) -> ConfigError:
    return ConfigError(f"cannot write to the shared root {root}: {os.strerror(errno.EACCES)}: {path}",
                       hint=f"choose a --shared directory you can write; {_NOTHING_CHANGED}")


def open_shared_root(settings: Settings, root: Path | str, group: str | None) -> tuple[Settings, SharedRecord]:
    """Check and lay out the shared root ``root`` for a create; return the settings rooted
    there and what the new env's record says of its sharing. Nothing is made when a check fails."""
    root = Path(root).expanduser().absolute()
    gid = sharing_group(root, group)
    check_shared_root(root)
    umask = current_umask()
    for rel in READ_DIRS + GROUP_DIRS:
        directory = (root / rel) if rel != "." else root
        if directory.is_dir():
            continue
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, -1, gid)
        os.chmod(directory, _dir_mode(rel in GROUP_DIRS, umask))
    return settings.with_root(root), SharedRecord(group=_group_name(gid), maintainer=effective_user())


# ---- who may change a shared env ----------------------------------------------------------

def refuse_unless_maintainer(record: EnvRecord, doing: str) -> None:
    """A shared env is changed by its maintainer alone: anyone else gets one line naming them."""
    shared = record.shared
    if shared is None or shared.maintainer == effective_user():
        return
    raise SharedEnvRefused(
        f"environment {record.name!r} is shared by {shared.maintainer} (group {shared.group}): "
        f"only {shared.maintainer} may {doing}",
        hint=f"'{user_command()} module {record.name} --shared {Path(record.prefix).parent.parent}' gives you "
        f"a module of your own for it; {_NOTHING_CHANGED}")


# ---- members' modules ------------------------------------------------------------------------

@dataclass
class MemberEntry:
    """A member's module (and kernels) pointing at a shared env, as registered in its root."""

    user: str
    env: str
    modules: list[str] = field(default_factory=list)
    kernels: list[str] = field(default_factory=list)
    root: str = ""          # the member's own envmod root

    def describe(self) -> str:
        things = [f"module {m}" for m in self.modules] + [f"kernel {k}" for k in self.kernels]
        return f"{self.user}'s {', '.join(things) or 'module'}"


def member_entry_path(shared_root: Path, env: str, user: str) -> Path:
    return shared_root / MEMBERS / user / f"{env}.yaml"


def read_member_entry(path: Path) -> MemberEntry | None:
    """The entry at ``path`` if it is sound: its file and its directory are one user's, writable
    by no other; the user is that owner, whatever the file says."""
    import yaml

    try:
        st, parent = path.lstat(), path.parent.lstat()
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if (not stat.S_ISREG(st.st_mode) or st.st_uid != parent.st_uid
            or (st.st_mode | parent.st_mode) & (stat.S_IWGRP | stat.S_IWOTH) or not isinstance(data, dict)):
        return None
    return MemberEntry(user=user_name(st.st_uid), env=path.stem,
                       modules=[str(m) for m in data.get("modules") or []],
                       kernels=[str(k) for k in data.get("kernels") or []], root=str(data.get("root") or ""))


def member_entries(shared_root: Path, env: str) -> list[MemberEntry]:
    """Every member's entry for ``env`` whose module (or kernel) may still exist: a file proved
    gone (its directory readable, the file not there) no longer points at the env."""
    base = shared_root / MEMBERS
    if not base.is_dir():
        return []
    entries = []
    for path in sorted(base.glob(f"*/{env}.yaml")):
        entry = read_member_entry(path)
        if entry is not None and any(_may_exist(Path(p)) for p in entry.modules + entry.kernels):
            entries.append(entry)
    return entries


def _may_exist(path: Path) -> bool:
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True         # another user's file we cannot look at: assume it is there
    return True


def add_member_entry(shared_root: Path, env: str, module: Path, member_root: Path) -> Path:
    """Register this user's ``module`` for ``env`` (merged with the entry they have already)."""
    path = member_entry_path(shared_root, env, effective_user())
    old = read_member_entry(path) if path.exists() else None
    modules = sorted(set(old.modules if old else []) | {str(module)})
    return _write_member_entry(shared_root, env, {"env": env, "root": str(member_root), "modules": modules,
                                                  "kernels": old.kernels if old else []}, "module")


def set_member_kernels(shared_root: Path, env: str, kernels: list[str]) -> None:
    """Record ``kernels`` (directories) as this user's Jupyter kernels for ``env``, in the entry
    their module made (``envmod module NAME --shared DIR``)."""
    old = read_member_entry(member_entry_path(shared_root, env, effective_user()))
    if old is None:
        raise ConfigError(f"you have no module registered for {env!r} in the shared root {shared_root}",
                          hint=f"'{user_command()} module {env} --shared {shared_root}' makes one; {_NOTHING_CHANGED}")
    _write_member_entry(shared_root, env, {"env": env, "root": old.root, "modules": old.modules,
                                           "kernels": sorted(set(kernels))}, "kernel")


def _write_member_entry(shared_root: Path, env: str, data: dict, what: str) -> Path:
    """Write this user's entry for ``env`` (in their own directory of ``members``, which no one
    else may write)."""
    import yaml

    path = member_entry_path(shared_root, env, effective_user())
    try:
        with shared_umask_in_effect():
            path.parent.mkdir(exist_ok=True)
            st = path.parent.lstat()
            if st.st_uid != os.geteuid():
                raise PermissionError(errno.EACCES, "it belongs to another user", str(path.parent))
            os.chmod(path.parent, stat.S_IMODE(st.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
            atomic_write_text(path, yaml.safe_dump(data, sort_keys=False), 0o644 & ~0o022)
    except OSError as exc:
        raise ConfigError(f"cannot register your {what} for {env!r} in the shared root {shared_root}: "
                          f"{exc.strerror}: {exc.filename}",
                          hint=f"members of its group can; {_NOTHING_CHANGED}") from None
    return path


def remove_member_entry(shared_root: Path, env: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        member_entry_path(shared_root, env, effective_user()).unlink()


def member_link_root(link: Path) -> Path | None:
    """The shared root a member's link ``<root>/envs/NAME`` points into, when it is one (this
    user's entry for NAME is registered there), even if the shared env is gone."""
    if not link.is_symlink():
        return None
    target = Path(os.readlink(link))
    if not target.is_absolute() or target.parent.name != "envs":
        return None
    shared_root = target.parent.parent
    return shared_root if member_entry_path(shared_root, link.name, effective_user()).is_file() else None


def refuse_if_members(shared_root: Path, record: EnvRecord, force: bool) -> None:
    """The maintainer's remove: refused while members' modules (or kernels) point at the env."""
    entries = member_entries(shared_root, record.name)
    if entries and not force:
        raise SharedEnvRefused(
            f"environment {record.name!r} is in use: " + "; ".join(e.describe() for e in entries)
            + " point at it",
            hint=f"each member removes theirs with '{user_command()} remove {record.name}', "
            f"or pass --force to remove it anyway; {_NOTHING_CHANGED}")


def check_member_request(record: EnvRecord, shared_root: Path) -> None:
    if record.shared is None:
        raise UsageError(f"environment {record.name!r} under {shared_root} is not a shared environment",
                         hint=f"its maintainer shares it with '{user_command()} create NAME --shared DIR'")


def check_may_remove(store, name: str, force: bool) -> Path | None:
    """Before ``remove`` takes the env's lock: the shared root when ``name`` is this member's
    own module for a shared env (only theirs goes); otherwise refuse a shared env's removal by
    anyone but its maintainer, and by the maintainer while members use it (unless ``force``)."""
    from ..errors import EnvmodError

    member_of = member_link_root(store.env_path(name))
    if member_of is not None or not store.exists(name):
        return member_of
    try:
        record = store.load(name)
    except EnvmodError:
        return None             # an unreadable record: remove says what it can
    if record.shared is not None:
        refuse_unless_maintainer(record, "remove it")
        refuse_if_members(store.settings.root, record, force)
    return None
