"""README "At scale", many envs: the envs' module tree behind one gateway module (Lua and Tcl,
as README gives them, with HOME standing for the user's home) loads an env in real Lmod and
real Environment Modules, and Lmod's spider finds the env through it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.modules

LUA = 'prepend_path("MODULEPATH", pathJoin(os.getenv("HOME"), ".local/share/envmod/modules"))\n'
TCL = "#%Module\nprepend-path MODULEPATH $::env(HOME)/.local/share/envmod/modules\n"


def test_an_env_loads_through_the_gateway_module(shell, tmp_path):
    home = tmp_path / "home"
    gateway = tmp_path / "gateway"
    gateway.mkdir()
    (gateway / ("envmod-envs.lua" if shell.system == "lmod" else "envmod-envs")).write_text(
        LUA if shell.system == "lmod" else TCL)
    env = {"HOME": str(home), "ENVMOD_ROOT": ""}
    shell.root = home / ".local/share/envmod"
    result = shell.run(f"""
module load python/3.11
$ENVMOD create genv -q
module purge
module use {gateway}
echo "avail=$(module -t avail 2>&1 | grep -c genv || true)"
module load envmod-envs
module load genv/py3.11
echo "env=$ENVMOD_ENV"
{"echo spider=$(module spider genv 2>&1 | grep -c genv/py3.11)" if shell.system == "lmod" else "echo spider=1"}
""", extra_env=env).check()
    lines = result.stdout.split()
    assert "avail=0" in lines, "the envs are not listed before the gateway is loaded"
    assert "env=genv" in lines
    spider = next(line for line in lines if line.startswith("spider="))
    assert int(spider.split("=")[1]) >= 1, "Lmod's spider finds the env through the gateway"
