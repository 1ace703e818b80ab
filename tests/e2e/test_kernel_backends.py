"""Issue #13, section 3, "works for every backend the project has": ``envmod kernel`` for a uv env,
a conda env (the site's real conda 26.7.1) and a rattler env (real py-rattler), each started by
the real jupyter_client and asked for ``sys.prefix`` inside the kernel.

One env per backend, pure packages only (ipykernel from PyPI, the conda site's channel for the
conda side: its ``python`` and the ``envmod-activate`` package whose activate.d script sets
ENVMOD_CONDA_ACTIVATED), nothing compiled. The venv backend's kernels are tested under both module
tools in test_scripts_kernels.py; here each backend runs under one tool, alternating: uv and
rattler under Environment Modules, conda under Lmod.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conda.channel import ACTIVATE_VARIABLE, MPI_LABEL
from tests.conda.conftest import CONDA_VERSION, conda_site, require_conda
from tests.conftest import ModuleShell, require_site
from tests.e2e.test_scripts_kernels import run_in_kernel

from bridge.store.record import read_record

pytestmark = pytest.mark.slow

PROBE = f"import os, sys; print(sys.prefix); print(os.environ.get({ACTIVATE_VARIABLE!r}, '-'))"


@dataclass(frozen=True)
class Case:
    backend: str
    tool: str               # the module tool the env is made, and its kernel installed and started, under
    loads: str              # what is loaded at create
    packages: str           # create's package arguments

    @property
    def conda_side(self) -> bool:
        return self.backend in ("conda", "rattler")


CASES = [
    pytest.param(Case("uv", "envmodules", "python/3.11", "--with ipykernel"), id="uv"),
    pytest.param(Case("conda", "lmod", f"conda/{CONDA_VERSION}", "--conda python envmod-activate --with ipykernel"),
                 marks=pytest.mark.conda, id="conda"),
    pytest.param(Case("rattler", "envmodules", "", "--conda python envmod-activate --with ipykernel"),
                 marks=pytest.mark.conda, id="rattler"),
]


def _module_trees(case: Case) -> str:
    """Shell lines making the conda site's modules visible (the conda env's module needs conda's)."""
    if not case.conda_side:
        return ""
    return f"module use {shlex.quote(str(conda_site() / 'modules' / ('lua' if case.tool == 'lmod' else 'tcl')))}\n"


@pytest.mark.parametrize("case", CASES)
def test_kernel_of_each_backend_starts_its_own_python_with_the_module_loaded(case: Case, tmp_path: Path):
    """Made, its kernel installed (--prefix) and started under one real module tool; inside, the
    kernel's sys.prefix is the env's (a conda env's: its build's real path) and, for a conda-side
    env, the activate.d variable its module carries is set."""
    require_site()
    if case.conda_side:
        require_conda()
    if case.backend == "rattler":
        pytest.importorskip("rattler", reason="py-rattler is not installed (envmod's [test] extra has it)")
    home = tmp_path / "home"
    home.mkdir()
    channel = conda_site() / "channel"
    (home / "envmod.yaml").write_text(f"conda_channels: [file://{channel}, file://{channel}/label/{MPI_LABEL}]\n")
    extra = {"HOME": str(home), "ENVMOD_CONFIG": str(home / "envmod.yaml"), "CONDA_PKGS_DIRS": str(home / "pkgs"),
             "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    shell = ModuleShell(case.tool, tmp_path / "root", tmp_path / "cache")
    name = f"k{case.backend}"
    module_type = "lmod" if case.tool == "lmod" else "tcl"
    made = shell.run(_module_trees(case) + (f"module load {case.loads}\n" if case.loads else "") + f"""
$ENVMOD create {name} -q --backend {case.backend} {case.packages} --module-type {module_type}
$ENVMOD kernel {name} --prefix {tmp_path}/jupyter
""", timeout=900, extra_env=extra)
    made.check()
    record = read_record(shell.root / "envs" / name / "envmod.yaml")
    kernels = tmp_path / "jupyter/share/jupyter/kernels"
    assert [k["dir"] for k in record.kernels] == [str(kernels / f"envmod-{name}")]

    # started as a notebook server would start it: a fresh session of the same tool, nothing loaded
    environment = shell.environment(_module_trees(case))
    environment["HOME"] = str(home)
    prefix, activated = run_in_kernel(kernels, environment, PROBE, kernel=f"envmod-{name}").split()
    assert prefix == record.prefix
    if case.conda_side:
        assert Path(prefix).parent.name == ".builds"        # the build's real path, not the name's link
        assert activated == "yes", "the conda package's activate.d variable is not set in the kernel"
    else:
        assert prefix == str(shell.root / "envs" / name)


def test_every_backend_has_a_kernel_test():
    """venv's kernels are tested in test_scripts_kernels.py; every other backend here."""
    from bridge.build.backends import BACKENDS

    covered = {"venv"} | {p.values[0].backend for p in CASES}
    assert set(BACKENDS) == covered
