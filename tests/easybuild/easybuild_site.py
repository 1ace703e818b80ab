"""Finding a real EasyBuild (and the central EasyBuild site of ci/eb-site.sh) and running it.

EasyBuild runs from its own Python (a venv of the site, or whatever ``eb`` is on PATH), never
inside the test process: the tests start ``eb`` or a small script under that Python.

Tests skip with the reason when EasyBuild or the site is missing, unless
ENVMOD_REQUIRE_EASYBUILD=1, where a missing EasyBuild is a failure.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import missing_reason

REPO = Path(__file__).resolve().parents[2]
EASYBLOCK = REPO / "easyblocks" / "u" / "userenv.py"
EXAMPLES = REPO / "easyblocks" / "examples"
LMOD_INIT = Path("/usr/share/lmod/lmod/init/bash")
TEST_USER = os.environ.get("ENVMOD_EB_USER", "envmodeb")


def site_dir() -> Path:
    return Path(os.environ.get("ENVMOD_EB_SITE", "/opt/envmod-eb-site"))


def _missing(reason: str) -> None:
    if os.environ.get("ENVMOD_REQUIRE_EASYBUILD") == "1":
        pytest.fail(reason + " (ENVMOD_REQUIRE_EASYBUILD=1)")
    pytest.skip(reason)


@dataclass(frozen=True)
class EasyBuild:
    eb: str             # the eb command
    python: str         # the Python that runs it
    config: str | None  # the site's configuration file, if any

    def environment(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("EASYBUILD_", "LMOD", "MODULE", "__LMOD", "_ModuleTable", "__MODULES"))
               and k not in ("LOADEDMODULES", "_LMFILES_", "VIRTUAL_ENV", "ENVMOD_ROOT", "PYTHONPATH", "EB_PYTHON")}
        env["EB_PYTHON"] = self.python
        if self.config:
            env["EASYBUILD_CONFIGFILES"] = self.config
        env.update(extra)
        return env


def find_easybuild() -> EasyBuild:
    """The site's EasyBuild (ENVMOD_EB_SITE), else an ``eb`` on PATH; skip (or fail) if none."""
    if not LMOD_INIT.is_file():
        _missing(f"Lmod is not installed ({LMOD_INIT} missing): EasyBuild needs it")
    site = site_dir()
    python = site / "easybuild/venv/bin/python"
    if (site / "easybuild/venv/bin/eb").is_file() and python.is_file():
        config = site / "etc/easybuild.cfg"
        return EasyBuild(str(site / "easybuild/venv/bin/eb"), str(python), str(config) if config.is_file() else None)
    eb = shutil.which("eb")
    if eb:
        candidates = [os.environ.get("EB_PYTHON"), str(Path(eb).with_name("python")), shutil.which("python3")]
        for cand in [c for c in candidates if c]:
            if subprocess.run([cand, "-c", "import easybuild.framework"], capture_output=True).returncode == 0:
                return EasyBuild(eb, cand, None)
    _missing(f"no EasyBuild: {site}/easybuild/venv/bin/eb missing and no usable 'eb' on PATH; "
             "run 'bash ci/eb-site.sh'")
    raise AssertionError("unreachable")


def site_missing_reason() -> str | None:
    site = site_dir()
    return missing_reason("central EasyBuild site", [site / "bin/eb", site / "etc/profile.sh",
                                                     site / "modules/all/Python/3.11.2.lua",
                                                     site / "modules/all/OpenMPI/4.1.4.lua",
                                                     site / "modules/all/HDF5/1.10.8.lua"], "ci/eb-site.sh")


def require_site() -> Path:
    find_easybuild()
    reason = site_missing_reason()
    if reason:
        _missing(reason)
    return site_dir()


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def check(self) -> "Result":
        assert self.returncode == 0, f"exit {self.returncode}\n--- stdout\n{self.stdout[-6000:]}\n--- stderr\n{self.stderr[-6000:]}"
        return self


def run(argv, env, cwd=None, timeout=600, user: str | None = None) -> Result:
    if user:
        runuser = shutil.which("runuser", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or "runuser"
        argv = [runuser, "-u", user, "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return Result(proc.returncode, proc.stdout, proc.stderr)


# ---- an unprivileged user for the end-to-end runs ----------------------------------------------

def unprivileged_user() -> str | None:
    """The user the end-to-end tests run eb as: ENVMOD_EB_USER (made if missing) when root, else none."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        proc = subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", TEST_USER],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            _missing(f"cannot create the test user {TEST_USER}: {proc.stderr.strip()}")
    return TEST_USER


def user_workdir(user: str | None, prefix: str = "envmod-eb-") -> Path:
    """A directory the test user owns (tmp_path of root is not readable by another user)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(work, 0o755)
    if user:
        entry = pwd.getpwnam(user)
        os.chown(work, entry.pw_uid, entry.pw_gid)
    return work


def copy_for_user(dest: Path, user: str | None) -> dict[str, Path]:
    """Copy the easyblock, the examples and the library where the test user can read them."""
    shutil.copytree(REPO / "easyblocks", dest / "easyblocks")
    shutil.copytree(REPO / "src", dest / "envmod/src", ignore=shutil.ignore_patterns("__pycache__"))
    if (REPO / "templates").is_dir():
        shutil.copytree(REPO / "templates", dest / "envmod/templates")
    shutil.copy2(REPO / "ci/demo.py", dest / "demo.py")
    shutil.copy2(REPO / "ci/ranks.py", dest / "ranks.py")
    if user:
        entry = pwd.getpwnam(user)
        for root, dirs, files in os.walk(dest):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    return {"easyblock": dest / "easyblocks/u/userenv.py", "examples": dest / "easyblocks/examples",
            "library": dest / "envmod/src", "demo": dest / "demo.py",
            "ranks": dest / "ranks.py"}


class UserShell:
    """bash scripts as the test user with the central site's profile sourced (Lmod, its modules, eb)."""

    def __init__(self, easybuild: EasyBuild, site: Path, work: Path, user: str | None, library: Path) -> None:
        self.easybuild = easybuild
        self.site = site
        self.work = work
        self.user = user
        self.library = library

    def env(self) -> dict[str, str]:
        home = self.work / "home"
        home.mkdir(exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(home, entry.pw_uid, entry.pw_gid)
        keep = {k: v for k, v in os.environ.items() if k.startswith(("PIP_", "LANG", "LC_", "http", "https", "no_proxy"))}
        keep.update({
            "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "USER": self.user or os.environ.get("USER", ""),
            "TMPDIR": str(self.work / "tmp"),
            "EB_PYTHON": self.easybuild.python,
            "EASYBUILD_PREFIX": str(self.work / "eb"),
            "ENVMOD_ROOT": str(self.work / "envmod-root"),
            "XDG_CACHE_HOME": str(self.work / "cache"),
            "ENVMOD_LIBRARY": str(self.library),
        })
        if self.easybuild.config:
            keep["EASYBUILD_CONFIGFILES"] = self.easybuild.config
        if not self.user and os.geteuid() == 0:
            keep["EASYBUILD_ALLOW_USE_AS_ROOT_AND_ACCEPT_CONSEQUENCES"] = "1"
            keep.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        return keep

    def run(self, script: str, timeout: float = 600) -> Result:
        (self.work / "tmp").mkdir(exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.work / "tmp", entry.pw_uid, entry.pw_gid)
        preamble = f"set -e\nsource {shlex.quote(str(self.site / 'etc/profile.sh'))}\ncd {shlex.quote(str(self.work))}\n"
        return run(["bash", "--noprofile", "--norc", "-c", preamble + script], self.env(), cwd=str(self.work),
                   timeout=timeout, user=self.user)
