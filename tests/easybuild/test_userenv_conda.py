"""The UserEnv easyblock with ``backend = 'conda'``: real ``eb`` builds a conda env with the conda
site's real conda, which comes from a dependency (a small module in the test's own module path
that points at the conda site's conda, as a site's EasyBuild-visible conda module would); the
module EasyBuild writes sets the conda env's variables and loads in real Lmod. Conda input the
easyconfig gets wrong is one error before anything is built."""

from __future__ import annotations

import os
import shlex
import textwrap
from pathlib import Path

import pytest
from tests.conda.channel import HELLO_MODULE
from tests.conda.conftest import CONDA_VERSION, conda_prefix, require_conda
from tests.easybuild.test_userenv_easyblock import (
    EbRun,
    easybuild,  # noqa: F401  (a fixture)
)
from tests.spack.spack_helpers import fresh_shell

from bridge.store.record import read_record

pytestmark = [pytest.mark.easybuild, pytest.mark.conda]


@pytest.fixture
def conda_modules(tmp_path) -> Path:
    """A module path holding conda/<version>: the conda site's conda, for EasyBuild's dependency."""
    require_conda()
    tree = tmp_path / "modules"
    (tree / "conda").mkdir(parents=True)
    root = conda_prefix()
    (tree / "conda" / f"{CONDA_VERSION}.lua").write_text(textwrap.dedent(f"""\
        local root = "{root}"
        prepend_path("PATH", pathJoin(root, "condabin"))
        setenv("CONDA_EXE", pathJoin(root, "bin", "conda"))
        setenv("EBROOTCONDA", root)
        setenv("EBVERSIONCONDA", "{CONDA_VERSION}")
        """))
    return tree


def write_ec(path: Path, backend: str, extra: str = "") -> Path:
    path.write_text(textwrap.dedent(f"""\
        easyblock = 'UserEnv'
        name = 'MyConda'
        version = '1.0'
        homepage = '(test)'
        description = "a conda env"
        toolchain = SYSTEM
        dependencies = [('conda', '{CONDA_VERSION}')]
        backend = '{backend}'
        conda_packages = ['envmod-hello']
        """) + extra)
    return path


def test_eb_builds_a_conda_env_whose_module_loads_in_lmod(easybuild, conda_modules, tmp_path):  # noqa: F811
    run = EbRun(easybuild, conda_modules, tmp_path)
    ec = write_ec(tmp_path / "MyConda-1.0.eb", "conda")
    result = run.eb(str(ec), "--force", CONDA_PKGS_DIRS=str(tmp_path / "pkgs"))
    assert result.returncode == 0, result.output[-3000:]
    installdir = run.prefix / "software" / "MyConda" / "1.0"
    record = read_record(installdir / "envmod.yaml")
    assert record.backend == "conda" and record.conda is not None
    assert "envmod-hello" in {p["name"] for p in record.conda.packages}
    assert record.conda.engine["module"] == f"conda/{CONDA_VERSION}"
    modules = run.prefix / "modules" / "all"
    shell = fresh_shell("lmod", f"module use {shlex.quote(str(conda_modules))}\nmodule use {shlex.quote(str(modules))}\n"
                                "module load MyConda/1.0\necho CONDA_PREFIX=$CONDA_PREFIX\n"
                                f"python -c 'import {HELLO_MODULE}, sys; print(sys.prefix)'\n")
    assert shell.returncode == 0, shell.stderr
    lines = shell.stdout.strip().splitlines()
    assert lines[-2] == f"CONDA_PREFIX={installdir}"
    assert os.path.realpath(lines[-1]) == os.path.realpath(installdir)


@pytest.mark.parametrize("backend, extra, says", [
    ("venv", "", "conda_packages and conda_channels need backend = 'conda' or 'rattler', not 'venv'"),
    ("conda", "conda_packages = ['envmod-hello -c file:///evil']\n", "is a conda option"),
    ("conda", "conda_packages = ['elsewhere::envmod-hello']\n", "which is not one of the channels"),
])
def test_conda_input_the_easyconfig_gets_wrong_is_one_error(easybuild, conda_modules, tmp_path,  # noqa: F811
                                                           backend, extra, says):
    run = EbRun(easybuild, conda_modules, tmp_path)
    ec = write_ec(tmp_path / "MyConda-1.0.eb", backend, extra)
    result = run.eb(str(ec), "-x")
    assert result.returncode != 0
    assert says in " ".join(result.output.split())
    assert not (run.prefix / "software" / "MyConda").exists()
