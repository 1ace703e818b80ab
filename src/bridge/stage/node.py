"""What ``envmod stage`` / ``unstage`` do on each node of a job: one Slurm step, one task per node,
runs ``python -m bridge.stage.node attach|detach|sweep ...`` there.

On a node, under ``<stage base>/envmod-stage/<user>/``::

    <name>-<id>/          the env: a squashfuse mount of the image, or the image unpacked
    <name>-<id>.sqfs      the image a mount reads (removed with the mount)
    <name>-<id>.jobs/     one empty file per job using this copy: the last one out releases it
    .lock                 serialises the jobs of this user on this node

A copy is shared by the jobs of its user on that node and released when the last of them
leaves (``detach``). A job that was killed (SIGKILL: no EXIT trap ran) leaves its marker; the
next ``attach`` or a ``sweep`` (a site's Epilog) drops markers of jobs Slurm no longer runs and
releases copies nobody uses.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

from ..fsutil import remove_tree

MOUNTED, UNPACKED, PRESENT = "mounted", "unpacked", "already staged"
RECORD_FILE = "envmod.yaml"     # as store.record's: this module runs on nodes, importing little


class NodeError(Exception):
    pass


def _user_dir(staged: Path) -> Path:
    return staged.parent


def _jobs_dir(staged: Path) -> Path:
    return staged.with_name(staged.name + ".jobs")


def _image_copy(staged: Path) -> Path:
    return staged.with_name(staged.name + ".sqfs")


def _own_dir(user_dir: Path) -> None:
    """``<base>/envmod-stage`` is every user's (sticky and world-writable, as /tmp is: the first
    job to stage on a node makes it); ``<user>/`` below it must be this user's own directory,
    never another's or a link planted there."""
    top = user_dir.parent
    if not top.is_dir():
        try:
            top.mkdir(mode=0o1777)
            os.chmod(top, 0o1777)       # mkdir's mode is cut by the umask
        except FileExistsError:
            pass
    try:
        user_dir.mkdir(mode=0o755)
    except FileExistsError:
        pass
    st = os.lstat(user_dir)
    if not os.path.isdir(user_dir) or os.path.islink(user_dir) or st.st_uid != os.geteuid():
        raise NodeError(f"{user_dir} is not a directory of this user's: refusing to stage there")


class _Locked:
    def __init__(self, user_dir: Path) -> None:
        _own_dir(user_dir)
        self.fd = os.open(user_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)

    def __enter__(self) -> "_Locked":
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def fuse_usable() -> bool:
    """squashfuse can mount here: it is installed, with a fusermount, and /dev/fuse opens for us
    (an ordinary user needs it 0666; many nodes have it 0600 or not at all)."""
    if not shutil.which("squashfuse") or not (shutil.which("fusermount3") or shutil.which("fusermount")):
        return False
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError:
        return False
    return True


def job_running(job: str) -> bool:
    """Slurm still runs ``job`` (squeue knows it in a state other than finished)."""
    proc = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    if proc.returncode != 0:
        # "Invalid job id specified": long finished. Any other failure: keep the copy, to be safe.
        return "invalid job id" not in proc.stderr.lower()
    return bool(proc.stdout.strip())


def attach(incoming: Path, image_format: str, staged: Path, job: str, allow_fuse: bool = True) -> str:
    """Make ``staged`` the env of the image ``incoming`` (this job's sbcast copy) on this node."""
    with _Locked(_user_dir(staged)):
        _sweep_dir(_user_dir(staged), job_running, keep=staged)
        jobs = _jobs_dir(staged)
        if (staged / RECORD_FILE).is_file():
            incoming.unlink(missing_ok=True)
            how = PRESENT
        elif image_format == "squashfs" and allow_fuse and fuse_usable() and _mount(incoming, staged):
            how = MOUNTED
        else:
            _unpack(incoming, image_format, staged)
            how = UNPACKED
        jobs.mkdir(exist_ok=True)
        (jobs / job).touch()
        return how


def _mount(incoming: Path, staged: Path) -> bool:
    image = _image_copy(staged)
    os.replace(incoming, image)
    staged.mkdir(exist_ok=True)
    proc = subprocess.run(["squashfuse", str(image), str(staged)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    if proc.returncode == 0 and (staged / RECORD_FILE).is_file():
        return True
    _unmount(staged)
    os.replace(image, incoming)      # the unpack reads it from there
    if staged.is_dir() and not os.path.ismount(staged):
        staged.rmdir()
    return False


def _unpack(incoming: Path, image_format: str, staged: Path) -> None:
    """Unpack into a temporary directory renamed into place: a copy is whole or not there."""
    tmp = staged.with_name(f".unpack-{staged.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if image_format == "squashfs":
        command = ["unsquashfs", "-no-progress", "-quiet", "-d", str(tmp), str(incoming)]
    else:
        tmp.mkdir()
        command = ["tar", "-xzf", str(incoming), "-C", str(tmp)]
    proc = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800)
    incoming.unlink(missing_ok=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise NodeError(f"unpacking {incoming.name} failed: {last}")
    if staged.is_dir() and not os.path.ismount(staged):
        staged.rmdir()              # an empty mount point left by a mount that failed
    os.rename(tmp, staged)


def detach(staged: Path, job: str) -> str:
    """This job no longer uses ``staged``; the last job out unmounts or removes it."""
    with _Locked(_user_dir(staged)):
        (_jobs_dir(staged) / job).unlink(missing_ok=True)
        return "released" if _release_if_unused(staged, job_running) else "still used by another job"


def sweep(base: Path, running: Callable[[str], bool] = job_running) -> list[str]:
    """Release every copy under ``base/envmod-stage/*`` whose jobs Slurm no longer runs (what
    killed jobs left): for a site's Epilog (as root: every user's) or by hand."""
    released: list[str] = []
    top = base / "envmod-stage"
    for user_dir in sorted(top.iterdir()) if top.is_dir() else []:
        if user_dir.is_dir() and not user_dir.is_symlink() and (os.geteuid() == 0 or
                                                                 user_dir.stat().st_uid == os.geteuid()):
            fd = os.open(user_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                released += _sweep_dir(user_dir, running)
            finally:
                os.close(fd)
    return released


def _staged_dirs(user_dir: Path) -> Iterator[Path]:
    for entry in sorted(user_dir.iterdir()):
        if entry.name.endswith(".jobs") and entry.is_dir():
            yield entry.with_name(entry.name[:-len(".jobs")])


def _sweep_dir(user_dir: Path, running: Callable[[str], bool], keep: Path | None = None) -> list[str]:
    released = []
    for staged in _staged_dirs(user_dir):
        if staged == keep:
            continue
        for marker in list(_jobs_dir(staged).iterdir()):
            if not running(marker.name):
                marker.unlink(missing_ok=True)
        if _release_if_unused(staged, running):
            released.append(str(staged))
    for leftover in user_dir.glob(".unpack-*"):        # an unpack killed half-way
        shutil.rmtree(leftover, ignore_errors=True)
    return released


def _release_if_unused(staged: Path, running: Callable[[str], bool]) -> bool:
    jobs = _jobs_dir(staged)
    if jobs.is_dir() and any(jobs.iterdir()):
        return False
    if os.path.ismount(staged):
        _unmount(staged)
    if os.path.ismount(staged):
        raise NodeError(f"cannot unmount {staged}: it is busy")
    if staged.is_dir():
        remove_tree(staged)
    _image_copy(staged).unlink(missing_ok=True)
    if jobs.is_dir():
        jobs.rmdir()
    return True


def _unmount(staged: Path) -> None:
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount")
    if fusermount:
        subprocess.run([fusermount, "-u", "-q", str(staged)], capture_output=True, stdin=subprocess.DEVNULL,
                       timeout=60)
    if os.path.ismount(staged) and os.geteuid() == 0:
        subprocess.run(["umount", str(staged)], capture_output=True, stdin=subprocess.DEVNULL, timeout=60)


def main(argv: list[str]) -> int:
    """``attach INCOMING FORMAT STAGED JOB [--no-fuse]``, ``detach STAGED JOB`` or ``sweep BASE``;
    prints ``<host>: <what happened>``."""
    host = socket.gethostname().split(".")[0]
    try:
        if argv[:1] == ["attach"] and len(argv) in (5, 6):
            what = attach(Path(argv[1]), argv[2], Path(argv[3]), argv[4], allow_fuse="--no-fuse" not in argv)
        elif argv[:1] == ["detach"] and len(argv) == 3:
            what = detach(Path(argv[1]), argv[2])
        elif argv[:1] == ["sweep"] and len(argv) == 2:
            what = f"released {len(sweep(Path(argv[1])))} stale copies"
        else:
            print(f"usage: python -m bridge.stage.node attach|detach|sweep ...: got {argv}", file=sys.stderr)
            return 2
    except (NodeError, OSError, subprocess.SubprocessError) as exc:
        print(f"{host}: {exc}", file=sys.stderr)
        return 1
    print(f"{host}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
