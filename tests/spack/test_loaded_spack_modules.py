"""The standalone ``envmod`` on a Spack site whose users never run Spack: they load the modules
Spack wrote, and envmod records the same Spack evidence (DAG hashes, specs, names in every module
type) that ``spack envmod create`` records, read from ``module-index.yaml`` and ``.spack-db``.

Runs everywhere on tests/data/spack-tree (what Spack 1.1.0 wrote); the last tests load those
modules in real Lmod and real Environment Modules.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tests.conftest import ModuleShell, require_site
from tests.recorded_spack_tree import HDF5, OPENMPI, PYTHON, copy_recorded_site
from tests.spack.tree_stack import stack_from_tree

from bridge.check import check_env
from bridge.config import load_settings
from bridge.discover.stack import CentralModule, CentralStack
from bridge.spack import stack as ss
from bridge.store.record import read_record

CORE = "modules/lmod/linux-debian12-x86_64/Core"
TCL = "modules/tcl/linux-debian12-x86_64"
LMOD_NAMES = {"python": "python/3.11.2-nuf5uir", "mpi": "openmpi/4.1.4-d2lqwco", "hdf5": "hdf5/1.10.8-bsz4j7z"}
TCL_NAMES = {"python": "python/3.11.2-none-none-nuf5uir", "mpi": "openmpi/4.1.4-none-none-d2lqwco",
             "hdf5": "hdf5/1.10.8-none-none-bsz4j7z"}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return copy_recorded_site(tmp_path / "site")


def loaded(site: Path, *extra: CentralModule) -> CentralStack:
    """The stack discovery makes of the three Lmod modules loaded (Spack's /usr externals set
    almost nothing a path-based discovery could use)."""
    modules = [CentralModule(name, str(site / CORE / f"{name}.lua"), kind) for kind, name in LMOD_NAMES.items()]
    return CentralStack(None, tuple(modules) + extra)


def test_loaded_spack_modules_get_the_facts_spack_envmod_records(site):
    other = CentralModule("tools/1.0", "/opt/elsewhere/tools/1.0.lua", "other", facts={"mine": 1})
    stack = ss.describe_loaded_spack_modules(loaded(site, other))
    by_kind = {m.kind: m for m in stack.modules}
    assert [m.name for m in stack.modules] == [*LMOD_NAMES.values(), "tools/1.0"]
    assert by_kind["python"].facts["spack_hash"] == PYTHON and by_kind["mpi"].facts["spack_hash"] == OPENMPI
    assert by_kind["hdf5"].facts["spack_spec"] == f"hdf5@1.10.8/{HDF5[:7]}"
    assert by_kind["mpi"].facts["spack_modules"]["tcl"]["name"] == TCL_NAMES["mpi"]
    assert by_kind["mpi"].facts["spack_unlocks"]                 # OpenMPI opens its Lmod subtree
    assert by_kind["python"].facts["spack_install_tree"] == str(site / "opt")   # found beside the modules
    assert stack.modules[-1] is other                              # not Spack's: kept as discovered


def test_same_facts_as_the_tree_route_of_spack_envmod(site):
    """Loaded modules and `spack envmod create`'s route (stack_from_tree) describe the same specs alike."""
    from bridge.spack.tree import ModuleIndex, SpackTree

    tree_stack = stack_from_tree(SpackTree.open(site / "opt"),
                                    {t: ModuleIndex.open(site / "modules" / t) for t in ("lmod", "tcl")},
                                    module_type="lmod")
    mine = {m.name: m for m in ss.describe_loaded_spack_modules(loaded(site)).modules}
    for module in tree_stack.modules:
        facts = dict(mine[module.name].facts)
        assert facts.pop("spack_install_tree") == str(site / "opt")
        assert (mine[module.name].kind, mine[module.name].prefix, dict(mine[module.name].paths), facts) == \
            (module.kind, module.prefix, dict(module.paths), dict(module.facts))


def test_configured_install_tree_when_it_lives_elsewhere(site, tmp_path):
    moved = tmp_path / "elsewhere" / "install"
    shutil.move(str(site / "opt"), moved)
    without = {m.kind: m for m in ss.describe_loaded_spack_modules(loaded(site)).modules}
    # the module index alone still gives the hash and every type's name, not the spec
    assert without["mpi"].facts["spack_hash"] == OPENMPI and "spack_spec" not in without["mpi"].facts
    assert without["mpi"].facts["spack_modules"]["tcl"]["name"] == TCL_NAMES["mpi"]
    settings = load_settings({"HOME": str(tmp_path), "ENVMOD_SPACK_TREES": str(moved)})
    assert settings.spack_install_trees == (moved,)
    with_tree = {m.kind: m for m in ss.describe_loaded_spack_modules(loaded(site), settings.spack_install_trees).modules}
    assert with_tree["mpi"].facts["spack_spec"] == f"openmpi@4.1.4/{OPENMPI[:7]}"


def test_site_config_names_install_trees(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text("spack_install_trees: [/opt/spack/opt/spack, $HOME/spack/opt]\n")
    settings = load_settings({"HOME": str(tmp_path), "ENVMOD_SITE_CONFIG": str(config)})
    assert settings.spack_install_trees == (Path("/opt/spack/opt/spack"), tmp_path / "spack/opt")
    config.write_text("spack_install_trees: /opt/spack\n")
    with pytest.raises(Exception, match="must be a list of paths"):
        load_settings({"HOME": str(tmp_path), "ENVMOD_SITE_CONFIG": str(config)})


def test_no_install_tree_means_builds_are_not_judged_installed_or_not(site, tmp_path):
    from bridge.store.record import CentralModuleRecord, EnvRecord, ModuleRecord, Provenance, PythonRecord

    shutil.rmtree(site / "opt")
    stack = ss.describe_loaded_spack_modules(loaded(site))
    record = EnvRecord(name="e", backend="venv", prefix=str(tmp_path),
                       python=PythonRecord(version="3.11.2", executable="/usr/bin/python3.11", module=LMOD_NAMES["python"]),
                       module=ModuleRecord(name="e/py3.11", type="lmod", depends_on=[LMOD_NAMES["python"]]),
                       created=Provenance(at="t", by="u", host="h", envmod_version="0"),
                       central_modules=[CentralModuleRecord.of(m) for m in stack.modules])
    assert ss.installed_in_trees(record) is None
    assert [c.status for c in ss.check_spack_modules(record, None)] == ["ok"]
    report = check_env(record, None)
    assert report.exit_code == 0 and report.checked["spack builds"] == 1
    assert [f.code for f in report.findings] == ["no-module-system"]


# ------------------------------------------------------------------------------- real module tools


@pytest.fixture(params=["lmod", "envmodules"])
def spack_shell(request, site: Path, tmp_path: Path):
    require_site()
    if not os.access("/usr/bin/python3.11", os.X_OK):
        pytest.skip("the recorded site's Python (/usr/bin/python3.11) is not on this machine")
    shell = ModuleShell(request.param, tmp_path / "root", tmp_path / "cache")
    names = LMOD_NAMES if request.param == "lmod" else TCL_NAMES
    use = site / (CORE if request.param == "lmod" else TCL)
    return shell, names, f'module use {use}\nmodule load {names["python"]} {names["mpi"]} {names["hdf5"]}\n'


@pytest.mark.modules
def test_envmod_create_over_loaded_spack_modules(spack_shell, site):
    shell, names, load = spack_shell
    run = shell.run(load + """
$ENVMOD create sx -q
$ENVMOD check sx
module purge
module use "$ENVMOD_ROOT/modules"
module load sx/py3.11
echo "LOADED=$LOADEDMODULES PY=$(command -v python)"
python -c 'import sys; print("PREFIX", sys.prefix)'
""").check()
    record = read_record(shell.root / "envs/sx/envmod.yaml")
    assert record.python.executable.startswith("/usr/bin/python3") and record.python.module == names["python"]
    assert record.module.depends_on == [names["python"]]
    facts = {m.kind: m.facts for m in record.central_modules}
    assert (facts["python"]["spack_hash"], facts["mpi"]["spack_hash"], facts["hdf5"]["spack_hash"]) == \
        (PYTHON, OPENMPI, HDF5)
    assert facts["python"]["spack_install_tree"] == str(site / "opt")
    assert "sx: healthy" in run.stdout
    assert f"LOADED={names['python']}:sx/py3.11 PY={shell.root}/envs/sx/bin/python" in run.stdout
    assert f"PREFIX {shell.root}/envs/sx" in run.stdout

    # maintenance: Spack rebuilt python and the module name now loads another build
    index = site / ("modules/lmod" if shell.system == "lmod" else "modules/tcl") / "module-index.yaml"
    index.write_text(index.read_text().replace(f"  {PYTHON}:", "  " + "q" * 32 + ":"))
    check = shell.run(load + "$ENVMOD check sx --json || echo EXIT=$?")
    assert "EXIT=1" in check.stdout
    report = json.loads(check.stdout.split("EXIT=")[0])
    [finding] = [f for f in report["findings"] if f["code"] == "spack-build-changed"]
    assert finding["what"] == f"module {names['python']}" and "envmod rebuild sx" in finding["advice"]
