"""Every character a new environment's name may hold loads in both real module tools, whichever
module type envmod writes first (issue #9, item 4: ``A+1`` loaded in Lmod but not in
Environment Modules 5, whose module specification reads ``+ ~ @ =`` as variants and versions)."""

from __future__ import annotations

import pytest
from tests.conftest import ModuleShell, loaded

pytestmark = pytest.mark.modules

# Each accepted character class, at the start, inside and at the end of a name.
ACCEPTED = ["Ab9.c_d-e", "7up", "end.", "end_", "end-", "a..b--c__d"]


@pytest.mark.parametrize("first, then", [("lmod", "tcl"), ("tcl", "lmod")])
def test_every_accepted_name_loads_in_lmod_and_environment_modules(lmod_shell, tcl_shell, first, then):
    creates = "\n".join(f"$ENVMOD create {name} -q --module-type {first}\n"
                        f"$ENVMOD module {name} --module-type {then}" for name in ACCEPTED)
    lmod_shell.run(f"module load python/3.11\n{creates}").check()
    for shell in (lmod_shell, tcl_shell):
        shell.root = lmod_shell.root
        _assert_each_loads(shell)


def _assert_each_loads(shell: ModuleShell) -> None:
    script = "module use \"$ENVMOD_ROOT/modules\"\n" + "\n".join(
        f"module load {name}/py3.11\nsnap {i}\nmodule purge" for i, name in enumerate(ACCEPTED))
    result = shell.run(script).check()
    for i, name in enumerate(ACCEPTED):
        during = result.snapshots.get(str(i), {})
        assert during.get("ENVMOD_ENV") == name, f"{shell.system} did not load {name}: {result.stderr}"
        assert f"{name}/py3.11" in loaded(during)
