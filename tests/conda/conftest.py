"""The conda tier: the site's central conda (ci/conda-site.sh) and a channel built once per session.

Tests skip with the reason when the conda site is missing, unless ENVMOD_REQUIRE_CONDA=1 (set by
ci/test.sh when ci/conda-site.sh succeeded): then a missing conda site is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conda.channel import MPI_LABEL, build_channel
from tests.conftest import require_site, site_dir

CONDA_VERSION = "26.7.1"


def conda_site() -> Path:
    return Path(os.environ.get("ENVMOD_CONDA_SITE", "/opt/envmod-conda-site"))


def conda_prefix() -> Path:
    return conda_site() / "software" / "conda" / CONDA_VERSION


def require_conda() -> Path:
    """The site's bin/conda, else skip (fail under ENVMOD_REQUIRE_CONDA=1) saying how to build it."""
    exe = conda_prefix() / "bin" / "conda"
    if not exe.is_file() or not (conda_site() / ".envmod-conda-site").is_file():
        reason = f"conda site not built ({exe} missing or unstamped): run 'bash ci/conda-site.sh'"
        if os.environ.get("ENVMOD_REQUIRE_CONDA") == "1":
            pytest.fail(reason + " (ENVMOD_REQUIRE_CONDA=1)")
        pytest.skip(reason)
    return exe


@dataclass
class Conda:
    """The site's conda, run with a private HOME and package cache (never the site's pkgs)."""
    exe: Path
    home: Path

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "_CE_"))}
        env.update(HOME=str(self.home), CONDA_PKGS_DIRS=str(self.home / "pkgs"))
        return env

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.exe), *args], capture_output=True, text=True, timeout=timeout,
                              env=self.environ(), stdin=subprocess.DEVNULL)

    def json(self, *args: str) -> dict:
        proc = self.run(*args, "--json")
        assert proc.returncode == 0, f"conda {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def conda(tmp_path_factory) -> Conda:
    return Conda(require_conda(), tmp_path_factory.mktemp("conda-home"))


@pytest.fixture(scope="session")
def channel(tmp_path_factory) -> Path:
    """The local channel, built once per session over the plain site's CPython."""
    require_site()
    return build_channel(tmp_path_factory.mktemp("conda-channel") / "channel",
                         str(site_dir() / "software/python/3.11.2/bin/python3"))


@dataclass
class CreatedEnv:
    prefix: Path
    create: dict          # conda create --json
    listing: list[dict]   # conda list --json


@pytest.fixture(scope="session")
def created_env(conda: Conda, channel: Path, tmp_path_factory) -> CreatedEnv:
    """One env made offline from the test channel (and its MPI label), shared by the tier."""
    prefix = tmp_path_factory.mktemp("conda-envs") / "env"
    create = conda.json("create", "-p", str(prefix), "--offline", "--override-channels",
                        "-c", f"file://{channel}", "-c", f"file://{channel}/label/{MPI_LABEL}",
                        "python", "pip", "envmod-hello", "envmod-activate", "openmpi", "-y")
    return CreatedEnv(prefix, create, conda.json("list", "-p", str(prefix)))


@pytest.fixture(scope="session")
def conda_pkgs(tmp_path_factory) -> Path:
    """One conda package cache for the tier's envmod creates: warm after the first (never the site's)."""
    return tmp_path_factory.mktemp("conda-pkgs")
