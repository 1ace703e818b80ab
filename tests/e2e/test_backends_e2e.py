"""Each backend end to end (#12, section 5), for venv and uv: the central python/3.11,
openmpi/4.1.4 and hdf5/1.10.8 loaded, an env of a pure package (cma) plus mpi4py and h5py built
against them, ``module purge``, only the env's module loaded in a fresh shell under real Lmod
*and* real Environment Modules, ``mpirun -n 2`` writing one HDF5 file in parallel and reading it
back; then ``envmod show``, ``check``, ``export`` and ``remove``.

Each backend's env is made under one tool (venv under Environment Modules, as test_demo.py
makes its venv under Lmod; uv under Lmod) and its modulefile written for the other with
``envmod module``, so both tools load both backends' envs. mpi4py and h5py are compiled once
per run (conftest's ``compiled_env``); these creates reuse those builds from its wheel cache,
which is only sound when the libraries they link are the same now: the record says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tests.conftest import REPO, CompiledEnv, ModuleShell, ShellResult, loaded

from bridge.store.record import read_record

pytestmark = pytest.mark.slow

CENTRAL = ["python/3.11", "openmpi/4.1.4", "hdf5/1.10.8"]
# backend -> the module tool its env is created under (the other one loads it too)
CREATED_UNDER = {"venv": "envmodules", "uv": "lmod"}
OTHER_TOOL = {"lmod": ("envmodules", "tcl"), "envmodules": ("lmod", "lmod")}


@dataclass
class BackendEnv:
    backend: str
    name: str
    shell: ModuleShell          # the tool it was created under
    created: ShellResult
    extra_env: dict[str, str]   # the wheel cache of compiled_env, a uv cache of this test's

    def other_shell(self) -> ModuleShell:
        return ModuleShell(OTHER_TOOL[self.shell.system][0], self.shell.root, self.shell.cache)

    def run(self, script: str, shell: ModuleShell | None = None, timeout: float = 600) -> ShellResult:
        return (shell or self.shell).run(script, timeout=timeout, extra_env=self.extra_env)


@pytest.fixture(scope="module", params=sorted(CREATED_UNDER))
def backend_env(request, compiled_env: CompiledEnv, tmp_path_factory) -> BackendEnv:
    backend = request.param
    base = tmp_path_factory.mktemp(f"e2e-{backend}")
    shell = ModuleShell(CREATED_UNDER[backend], base / "root", base / "cache")
    shell.root.mkdir()
    extra = {"ENVMOD_WHEEL_CACHE": str(compiled_env.wheels), "UV_CACHE_DIR": str(base / "uv-cache")}
    name = f"e2e-{backend}"
    created = shell.run(f"""
module load {' '.join(CENTRAL)}
$ENVMOD create {name} --backend {backend} --with cma mpi4py h5py --description "{backend} end to end"
""", timeout=1800, extra_env=extra)
    return BackendEnv(backend, name, shell, created, extra)


def test_create_reuses_the_site_builds_and_installs_the_rest_with_the_backend(backend_env: BackendEnv):
    env = backend_env
    env.created.check()
    assert f"created {env.name}: {env.backend} over python/3.11 (Python 3.11.2)" in env.created.stdout
    for package in ("mpi4py", "h5py"):
        assert f"] reuse {package}" in env.created.stderr, package
        assert f"] compile {package}" not in env.created.stderr, package
    assert f"] install: cma{' (uv)' if env.backend == 'uv' else ''}" in env.created.stderr
    record = read_record(env.shell.root / f"envs/{env.name}/envmod.yaml")
    assert record.backend == env.backend
    packages = {p.name.lower(): p for p in record.packages}
    assert (packages["mpi4py"].install, packages["mpi4py"].built_against) == ("source", ["openmpi/4.1.4"])
    assert (packages["h5py"].install, packages["h5py"].built_against) == ("source", ["hdf5/1.10.8", "openmpi/4.1.4"])
    assert packages["cma"].install == "wheel" and "numpy" not in packages       # numpy stays the site's
    assert record.module.depends_on == CENTRAL


@pytest.mark.parametrize("tool", ["created", "other"])
def test_only_its_module_runs_parallel_hdf5_in_a_fresh_shell(backend_env: BackendEnv, tool: str, tmp_path: Path):
    env = backend_env
    env.created.check()
    shell = env.shell
    if tool == "other":
        system, module_type = OTHER_TOOL[env.shell.system]
        env.run(f"$ENVMOD module {env.name} --module-type {module_type}").check()
        shell = env.other_shell()
    run = env.run(f"""
module purge
module use "$ENVMOD_ROOT/modules"
module load {env.name}/py3.11
snap during
python -c 'import cma'
mpirun -n 2 python {REPO}/ci/demo.py {tmp_path}/demo.h5
""", shell=shell, timeout=300).check()
    assert set(loaded(run.snapshots["during"])) == {*CENTRAL, f"{env.name}/py3.11"}
    assert "2 ranks wrote" in run.stdout and "read back [0, 10]" in run.stdout and "mpi=True" in run.stdout


def test_show_check_export_and_remove(backend_env: BackendEnv, tmp_path: Path):
    env = backend_env
    env.created.check()
    export = tmp_path / "export.yaml"
    run = env.run(f"""
$ENVMOD show {env.name}
$ENVMOD show {env.name} --json > {tmp_path}/show.json
$ENVMOD check {env.name}
$ENVMOD export {env.name} -o {export}
$ENVMOD remove {env.name} --yes
$ENVMOD list --json > {tmp_path}/list.json
""").check()
    assert f"{env.name}: {env.backend} over python/3.11" in run.stdout
    shown = json.loads((tmp_path / "show.json").read_text())
    assert shown["backend"] == env.backend and shown["module"]["depends_on"] == CENTRAL
    assert f"{env.name}: healthy" in run.stdout
    # the export: made by this backend (create --from makes it so again), every package pinned
    exported = yaml.safe_load(export.read_text())
    assert exported["backend"] == env.backend
    assert [m["name"] for m in exported["modules"]] == CENTRAL
    assert sorted(exported["requirements"]) == sorted(f"{p['name']}=={p['version']}" for p in shown["packages"])
    assert {r.split("==")[0].lower() for r in exported["requirements"]} >= {"cma", "mpi4py", "h5py"}
    # removed: its env and every modulefile written for it gone
    assert not (env.shell.root / "envs" / env.name).exists()
    assert not list((env.shell.root / "modules").glob(f"{env.name}*"))
    assert json.loads((tmp_path / "list.json").read_text()) == []
