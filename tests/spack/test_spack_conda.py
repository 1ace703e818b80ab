"""``spack envmod create --backend conda`` with a real Spack 1.1 and the conda site's real conda
(its module loaded, as a user of a site with both would): the same conda env as ``envmod create``
makes, depending on the conda module it was made with; bad conda input is one line."""

from __future__ import annotations

import os
import shlex

import pytest
import yaml
from spack_helpers import Spack, fresh_shell
from tests.conda.channel import HELLO_MODULE
from tests.conda.conftest import CONDA_VERSION, conda_site, require_conda

pytestmark = [pytest.mark.spack, pytest.mark.conda]

CONDA_MODULE = f"conda/{CONDA_VERSION}"


def spack_with_conda_loaded(spack: Spack, tmp_path, *args: str):
    """``spack envmod ARGS`` in a fresh Lmod shell with the site's conda module loaded."""
    require_conda()
    tree = conda_site() / "modules" / "lua"
    command = " ".join(shlex.quote(a) for a in spack.argv("envmod", *args))
    return fresh_shell("lmod", f"module use {shlex.quote(str(tree))}\nmodule load {CONDA_MODULE}\n{command}\n",
                       extra_env=spack.environ({"CONDA_PKGS_DIRS": str(tmp_path / "pkgs")}))


def test_spack_envmod_makes_a_conda_env_depending_on_the_conda_module(spack, site, tmp_path):
    proc = spack_with_conda_loaded(spack, tmp_path, "create", "sc", "--backend", "conda", "--conda", "envmod-hello",
                                   "--module-type", "lmod", "-q")
    assert proc.returncode == 0, proc.stderr
    record = yaml.safe_load((spack.root / "envs" / "sc" / "envmod.yaml").read_text())
    assert record["backend"] == "conda" and record["created"]["front_end"] == "spack"
    assert "envmod-hello" in {p["name"] for p in record["conda"]["packages"]}
    assert record["conda"]["engine"]["module"] == CONDA_MODULE
    assert CONDA_MODULE in record["module"]["depends_on"]
    tree = conda_site() / "modules" / "lua"
    run = fresh_shell("lmod", f"module use {shlex.quote(str(tree))}\nmodule use {shlex.quote(str(spack.root / 'modules'))}\n"
                              f"module load {record['module']['name']}\nmodule list 2>&1\n"
                              f"python -c 'import {HELLO_MODULE}, sys; print(sys.prefix)'\n")
    assert run.returncode == 0, run.stderr
    assert CONDA_MODULE in run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[-1] == os.path.realpath(spack.root / "envs" / "sc")


def test_spack_envmod_takes_an_environment_file_and_refuses_bad_conda_input_in_one_line(spack, site, tmp_path):
    envfile = tmp_path / "environment.yml"
    envfile.write_text("dependencies: [envmod-hello, {pip: [--index-url=http://127.0.0.1:9/simple]}]\n")
    proc = spack_with_conda_loaded(spack, tmp_path, "create", "bad", "--backend", "conda", "-f", str(envfile))
    assert proc.returncode != 0
    assert "is a pip option" in proc.stderr and "Traceback" not in proc.stderr
    proc = spack_with_conda_loaded(spack, tmp_path, "create", "bad", "--backend", "conda",
                                   "--conda=envmod-hello -c file:///evil")
    assert proc.returncode != 0 and "is a conda option" in proc.stderr and "Traceback" not in proc.stderr
    proc = spack_with_conda_loaded(spack, tmp_path, "create", "bad", "--conda", "envmod-hello")
    assert proc.returncode != 0 and "need a conda backend" in proc.stderr
    assert not (spack.root / "envs" / "bad").exists()
