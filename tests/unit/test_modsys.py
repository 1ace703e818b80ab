"""bridge.discover.modsys: the real Lmod and Environment Modules ``show``, parsed into ModuleEffects.

Modulefiles are written into tmp_path and shown by the real tools; canned text covers the
forms a tool prints that are awkward to produce (and documents what each parser accepts).
Environment Modules comes from the test site ($ENVMOD_SITE/envmodules, built by ci); Lmod from
$LMOD_CMD or the system package.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from tests.conftest import require_tool, site_dir

from bridge.discover.modsys import EnvironmentModules, Lmod, LoadedModule, ModuleEffect, detect_module_system, tcl_words
from bridge.errors import DiscoveryError, NoModuleSystem

LMOD_DEFAULT = "/usr/share/lmod/lmod/libexec/lmod"


def _unavailable(reason: str):
    if os.environ.get("ENVMOD_REQUIRE_SITE") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def lmod_command() -> str:
    cmd = os.environ.get("LMOD_CMD") or LMOD_DEFAULT
    if not os.path.isfile(cmd):
        _unavailable(f"Lmod not found (LMOD_CMD unset and {LMOD_DEFAULT} missing)")
    return cmd


def modulecmd_tcl() -> str:
    """$ENVMOD_SITE/envmodules/usr/lib/<multiarch>/modulecmd.tcl, as ci/site.sh unpacks it."""
    found = sorted((site_dir() / "envmodules/usr/lib").glob("*/modulecmd.tcl"))
    if not found:
        _unavailable(f"Environment Modules not found under {site_dir() / 'envmodules/usr/lib'}: build the test "
                     "site with 'bash ci/site.sh' (or point ENVMOD_SITE at one)")
    return str(found[0])


def tool_env(tmp: Path, modulepath: Path) -> dict[str, str]:
    """A clean environment in which a module tool sees only ``modulepath``."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "MODULEPATH": str(modulepath),
            "LANG": "C.UTF-8"}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---- Lmod, real ---------------------------------------------------------------------------

LUA_FOO = r'''
prepend_path("PATH", "/opt/foo bar/bin")
append_path("MANPATH", "/opt/foo/man:/opt/foo/share/man")
setenv("FOO_ROOT", "/opt/foo")
setenv("QUOTED", "he said \"hi\" and 'bye'")
pushenv("PUSHED", "pv")
depends_on("gcc/12")
family("mpi")
'''


@pytest.fixture
def lmod_tree(tmp_path):
    tree = tmp_path / "lua"
    write(tree / "foo/1.0.lua", LUA_FOO)
    write(tree / "gcc/12.lua", 'setenv("GCC_ROOT", "/opt/gcc")\n')
    return tree


@pytest.fixture
def lmod_foo(tmp_path, lmod_tree):
    effects = Lmod(lmod_command()).show(["foo/1.0"], tool_env(tmp_path, lmod_tree))
    return effects, str(lmod_tree / "foo/1.0.lua")


def test_lmod_show_is_keyed_by_the_modulefile_path(lmod_foo):
    effects, path = lmod_foo
    assert list(effects) == [path]


def test_lmod_show_prepend_with_space_in_value(lmod_foo):
    effects, path = lmod_foo
    assert effects[path].prepend == {"PATH": ["/opt/foo bar/bin"]}


def test_lmod_show_append_splits_colon_lists(lmod_foo):
    effects, path = lmod_foo
    assert effects[path].append == {"MANPATH": ["/opt/foo/man", "/opt/foo/share/man"]}


def test_lmod_show_setenv_keeps_quotes_in_values(lmod_foo):
    effects, path = lmod_foo
    assert effects[path].setenv == {"FOO_ROOT": "/opt/foo", "QUOTED": "he said \"hi\" and 'bye'", "PUSHED": "pv"}


def test_lmod_show_depends_and_family(lmod_foo):
    effects, path = lmod_foo
    assert effects[path].depends == ["gcc/12"]
    assert effects[path].families == ["mpi"]


def test_lmod_show_of_several_modules_gives_one_effect_each(tmp_path, lmod_tree):
    effects = Lmod(lmod_command()).show(["foo/1.0", "gcc/12"], tool_env(tmp_path, lmod_tree))
    assert set(effects) == {str(lmod_tree / "foo/1.0.lua"), str(lmod_tree / "gcc/12.lua")}
    assert effects[str(lmod_tree / "gcc/12.lua")].setenv == {"GCC_ROOT": "/opt/gcc"}
    assert effects[str(lmod_tree / "gcc/12.lua")].prepend == {}


def test_lmod_show_priority_option_does_not_leak_into_the_path(tmp_path):
    tree = tmp_path / "lua"
    write(tree / "pri/1.lua", 'prepend_path{"LD_LIBRARY_PATH", "/opt/pri/lib", priority=10}\n')
    effects = Lmod(lmod_command()).show(["pri/1"], tool_env(tmp_path, tree))
    assert effects[str(tree / "pri/1.lua")].prepend == {"LD_LIBRARY_PATH": ["/opt/pri/lib"]}


def test_lmod_show_help_line_that_looks_like_a_path_header_is_not_a_new_module(tmp_path):
    # Lmod prints help([[...]]) verbatim; a help line "/apps/thing:" must not start a block.
    tree = tmp_path / "lua"
    write(tree / "doc/1.lua", 'help([[\nInstalled under\n/apps/thing:\n]])\nsetenv("DOC_ROOT", "/apps/thing")\n')
    effects = Lmod(lmod_command()).show(["doc/1"], tool_env(tmp_path, tree))
    assert list(effects) == [str(tree / "doc/1.lua")]
    assert effects[str(tree / "doc/1.lua")].setenv == {"DOC_ROOT": "/apps/thing"}


def test_lmod_show_of_a_missing_module_is_a_discovery_error(tmp_path, lmod_tree):
    with pytest.raises(DiscoveryError, match="nosuch/1"):
        Lmod(lmod_command()).show(["nosuch/1"], tool_env(tmp_path, lmod_tree))


def test_lmod_show_failure_quotes_lmods_reason(tmp_path, lmod_tree):
    # Lmod's message is several lines ("Failed to find the following module(s) ... MPI
    # implementations."): the error must carry the reason, not the last word-wrapped line.
    with pytest.raises(DiscoveryError) as info:
        Lmod(lmod_command()).show(["nosuch/1"], tool_env(tmp_path, lmod_tree))
    assert "Failed to find" in info.value.message


# ---- Lmod, canned text --------------------------------------------------------------------

RULE = "-" * 76


def lmod_text(path: str, *lines: str) -> str:
    return "\n".join([RULE, f"   {path}:", RULE, *lines, ""])


def test_lmod_parse_priority_form_with_spaces():
    text = lmod_text("/m/a.lua", 'prepend_path{"PATH","/opt/a/bin",priority="100"}')
    assert Lmod.parse_show(text)["/m/a.lua"].prepend == {"PATH": ["/opt/a/bin"]}


def test_lmod_parse_delim_option_splits_on_that_delimiter():
    text = lmod_text("/m/a.lua", 'prepend_path{"LIST","x,y",delim=","}')
    assert Lmod.parse_show(text)["/m/a.lua"].prepend == {"LIST": ["x", "y"]}


def test_lmod_parse_ignores_whatis_and_help_calls():
    text = lmod_text("/m/a.lua", 'whatis("Description: x")', 'help([[text]])', 'setenv("A","1")')
    assert Lmod.parse_show(text)["/m/a.lua"] == ModuleEffect(setenv={"A": "1"})


def test_lmod_parse_load_forms_are_dependencies():
    text = lmod_text("/m/a.lua", 'load("gcc/12")', 'always_load("zlib/1")', 'prereq("cmake/3")',
                     'depends_on("x/1","y/2")')
    assert Lmod.parse_show(text)["/m/a.lua"].depends == ["gcc/12", "zlib/1", "cmake/3", "x/1", "y/2"]


def test_lmod_parse_two_blocks():
    text = lmod_text("/m/a.lua", 'setenv("A","1")') + lmod_text("/m/b.lua", 'setenv("B","2")')
    effects = Lmod.parse_show(text)
    assert effects["/m/a.lua"].setenv == {"A": "1"} and effects["/m/b.lua"].setenv == {"B": "2"}


def test_lmod_parse_empty_value():
    text = lmod_text("/m/a.lua", 'setenv("EMPTY","")', 'prepend_path("PATH","")')
    effect = Lmod.parse_show(text)["/m/a.lua"]
    assert effect.setenv == {"EMPTY": ""}
    assert effect.prepend.get("PATH", []) == []


def test_lmod_argv_passes_shell_and_args():
    assert Lmod("/x/lmod").argv("bash", "show", "a") == ["/x/lmod", "bash", "show", "a"]


# ---- Environment Modules, real ------------------------------------------------------------

TCL_BAR = r'''#%Module1.0
prepend-path PATH "/opt/bar baz/bin"
append-path MANPATH /opt/bar/man:/opt/bar/share/man
setenv BAR_ROOT /opt/bar
setenv QUOTED "he said \"hi\" and {braces} \$x"
setenv SPACED {a b c}
depends-on gcc/12
module load zlib/1.3
family mpi
'''


@pytest.fixture
def tcl_tree(tmp_path):
    tree = tmp_path / "tcl"
    write(tree / "bar/2.0", TCL_BAR)
    write(tree / "gcc/12", "#%Module1.0\nsetenv GCC_ROOT /opt/gcc\n")
    write(tree / "zlib/1.3", "#%Module1.0\n")
    return tree


@pytest.fixture
def em_bar(tmp_path, tcl_tree):
    effects = EnvironmentModules(modulecmd_tcl()).show(["bar/2.0"], tool_env(tmp_path, tcl_tree))
    return effects, str(tcl_tree / "bar/2.0")


def em_show_one(tmp_path: Path, body: str):
    tree = tmp_path / "tcl1"
    write(tree / "one/1", "#%Module1.0\n" + body)
    effects = EnvironmentModules(modulecmd_tcl()).show(["one/1"], tool_env(tmp_path, tree))
    return effects[str(tree / "one/1")]


def test_em_show_is_keyed_by_the_modulefile_path(em_bar):
    effects, path = em_bar
    assert list(effects) == [path]


def test_em_show_prepend_with_space_in_value(em_bar):
    effects, path = em_bar
    assert effects[path].prepend == {"PATH": ["/opt/bar baz/bin"]}


def test_em_show_append_splits_colon_lists(em_bar):
    effects, path = em_bar
    assert effects[path].append == {"MANPATH": ["/opt/bar/man", "/opt/bar/share/man"]}


def test_em_show_setenv_values_with_quotes_braces_and_spaces(em_bar):
    effects, path = em_bar
    assert effects[path].setenv == {"BAR_ROOT": "/opt/bar", "QUOTED": 'he said "hi" and {braces} $x',
                                    "SPACED": "a b c"}


def test_em_show_depends_on_and_module_load_are_dependencies(em_bar):
    effects, path = em_bar
    assert effects[path].depends == ["gcc/12", "zlib/1.3"]


def test_em_show_family(em_bar):
    effects, path = em_bar
    assert effects[path].families == ["mpi"]


def test_em_show_of_several_modules_gives_one_effect_each(tmp_path, tcl_tree):
    effects = EnvironmentModules(modulecmd_tcl()).show(["bar/2.0", "gcc/12"], tool_env(tmp_path, tcl_tree))
    assert set(effects) == {str(tcl_tree / "bar/2.0"), str(tcl_tree / "gcc/12")}
    assert effects[str(tcl_tree / "gcc/12")].setenv == {"GCC_ROOT": "/opt/gcc"}


def test_em_show_several_values_in_one_prepend(tmp_path):
    assert em_show_one(tmp_path, "prepend-path PATH /p1 /p2\n").prepend == {"PATH": ["/p1", "/p2"]}


def test_em_show_duplicates_flag_is_not_a_value(tmp_path):
    assert em_show_one(tmp_path, "append-path --duplicates PATH /dup/bin\n").append == {"PATH": ["/dup/bin"]}


def test_em_show_delim_option_and_its_argument_are_not_the_variable(tmp_path):
    effect = em_show_one(tmp_path, "prepend-path --delim : CPATH /opt/bar/include\n")
    assert effect.prepend == {"CPATH": ["/opt/bar/include"]}


def test_em_show_short_delim_option_splits_on_that_delimiter(tmp_path):
    effect = em_show_one(tmp_path, "prepend-path -d , LIST a,b\n")
    assert effect.prepend == {"LIST": ["a", "b"]}


def test_em_show_module_use_is_not_a_dependency(tmp_path):
    effect = em_show_one(tmp_path, "module use /opt/extra/modules\n")
    assert effect.depends == []


def test_em_show_module_unload_is_not_a_dependency(tmp_path):
    effect = em_show_one(tmp_path, "module unload oldmod\n")
    assert effect.depends == []


def test_em_show_always_load_is_a_dependency(tmp_path):
    # Lmod's always_load() counts as one; Environment Modules' always-load should too.
    write(tmp_path / "tcl1/gcc/12", "#%Module1.0\n")
    assert em_show_one(tmp_path, "always-load gcc/12\n").depends == ["gcc/12"]


def test_em_show_keeps_backslashes_in_values(tmp_path):
    # Environment Modules prints values raw (no Tcl escaping), so a backslash is data.
    effect = em_show_one(tmp_path, 'setenv PS_X "back\\\\slash"\n')
    assert effect.setenv == {"PS_X": "back\\slash"}


def test_em_show_empty_value(tmp_path):
    assert em_show_one(tmp_path, 'setenv EMPTY ""\n').setenv == {"EMPTY": ""}


def test_em_show_of_a_missing_module_is_a_discovery_error(tmp_path, tcl_tree):
    # modulecmd.tcl exits 0 here (its shell code, 'test 0 = 1;', carries the failure).
    with pytest.raises(DiscoveryError, match="nosuch/1"):
        EnvironmentModules(modulecmd_tcl()).show(["nosuch/1"], tool_env(tmp_path, tcl_tree))


# ---- Environment Modules, canned text -----------------------------------------------------

EM_RULE = "-" * 67


def em_text(path: str, *lines: str) -> str:
    return "\n".join([EM_RULE, f"{path}:", "", *lines, EM_RULE, ""])


def test_em_parse_two_blocks():
    text = em_text("/m/a", "setenv\t\tA 1") + em_text("/m/b", "setenv\t\tB {two words}")
    effects = EnvironmentModules.parse_show(text)
    assert effects["/m/a"].setenv == {"A": "1"} and effects["/m/b"].setenv == {"B": "two words"}


def test_em_parse_ignores_whatis_and_conflict():
    text = em_text("/m/a", "module-whatis\t{a thing}", "conflict\tother", "prepend-path\tPATH /a/bin")
    assert EnvironmentModules.parse_show(text)["/m/a"] == ModuleEffect(prepend={"PATH": ["/a/bin"]})


def test_em_parse_prereq_lists_each_module():
    text = em_text("/m/a", "prereq\t\tgcc/12 gcc/13")
    assert EnvironmentModules.parse_show(text)["/m/a"].depends == ["gcc/12", "gcc/13"]


def test_tcl_words_splits_on_tabs_and_spaces():
    assert tcl_words("setenv\t\tA {b c} d") == ["setenv", "A", "b c", "d"]


def test_tcl_words_keeps_nested_braces():
    assert tcl_words("setenv X {a {b} c}") == ["setenv", "X", "a {b} c"]


def test_tcl_words_takes_quotes_literally():
    # Environment Modules braces values with spaces and prints the rest raw: a quote is data.
    assert tcl_words('setenv X "a"') == ["setenv", "X", '"a"']


def test_tcl_words_empty_braces_is_an_empty_word():
    assert tcl_words("setenv X {}") == ["setenv", "X", ""]


def test_em_argv_uses_tclsh_when_the_script_is_not_executable(tmp_path):
    script = write(tmp_path / "modulecmd.tcl", "")
    script.chmod(0o644)
    assert EnvironmentModules(str(script)).argv("bash", "show") == ["tclsh", str(script), "bash", "show"]


def test_em_argv_runs_an_executable_command_directly(tmp_path):
    script = write(tmp_path / "modulecmd", "#!/bin/sh\n")
    script.chmod(0o755)
    assert EnvironmentModules(str(script)).argv("bash", "show") == [str(script), "bash", "show"]


# ---- loaded modules and detection ---------------------------------------------------------

def test_loaded_pairs_names_with_modulefiles():
    env = {"LOADEDMODULES": "gcc/12:openmpi/4", "_LMFILES_": "/m/gcc/12.lua:/m/openmpi/4.lua"}
    assert Lmod("lmod").loaded(env) == [LoadedModule("gcc/12", "/m/gcc/12.lua"),
                                        LoadedModule("openmpi/4", "/m/openmpi/4.lua")]


def test_loaded_with_nothing_loaded_is_empty():
    assert EnvironmentModules("modulecmd").loaded({}) == []


def test_loaded_refuses_inconsistent_state():
    env = {"LOADEDMODULES": "gcc/12:openmpi/4", "_LMFILES_": "/m/gcc/12.lua"}
    with pytest.raises(DiscoveryError, match="disagree") as info:
        Lmod("lmod").loaded(env)
    assert "module purge" in info.value.hint


def test_show_of_no_modules_runs_nothing():
    assert Lmod("/nonexistent/lmod").show([]) == {}


def test_detect_prefers_lmod(tmp_path):
    lmod = write(tmp_path / "lmod", "")
    modulecmd = write(tmp_path / "modulecmd.tcl", "")
    system = detect_module_system({"LMOD_CMD": str(lmod), "LMOD_VERSION": "8.7", "MODULES_CMD": str(modulecmd)})
    assert isinstance(system, Lmod) and system.command == str(lmod) and system.version == "8.7"


def test_detect_environment_modules(tmp_path):
    modulecmd = write(tmp_path / "modulecmd.tcl", "")
    system = detect_module_system({"MODULES_CMD": str(modulecmd)})
    assert isinstance(system, EnvironmentModules) and system.module_type == "tcl"


def test_detect_ignores_a_command_that_does_not_exist(tmp_path):
    with pytest.raises(NoModuleSystem):
        detect_module_system({"LMOD_CMD": str(tmp_path / "gone")})


def test_detect_nothing_initialised_is_no_module_system_with_a_hint():
    with pytest.raises(NoModuleSystem) as info:
        detect_module_system({})
    assert "--python" in info.value.hint


def test_effect_json_round_trip():
    effect = ModuleEffect(prepend={"PATH": ["/a"]}, append={"X": ["/b"]}, setenv={"A": "1"},
                          depends=["gcc/12"], families=["mpi"])
    assert ModuleEffect.from_json(effect.to_json()) == effect


# ---- the order of several prepends, against what the tools really put on the variable ------

ORDER_LUA = ('prepend_path("ORDER_PATH", "/a1:/a2")\nprepend_path("ORDER_PATH", "/b")\n'
             'append_path("ORDER_PATH", "/z1")\nappend_path("ORDER_PATH", "/z2")\n')
ORDER_TCL = ("#%Module1.0\nprepend-path ORDER_PATH /a1 /a2\nprepend-path ORDER_PATH /b\n"
             "append-path ORDER_PATH /z1\nappend-path ORDER_PATH /z2\n")


def _loaded_value(argv: list[str], env: dict[str, str], var: str) -> list[str]:
    """``var`` after bash evaluates what the real module tool prints for a load."""
    script = 'eval "$("$@")" && printf "%s" "${' + var + '}"'
    out = subprocess.run(["bash", "--noprofile", "--norc", "-c", script, "bash", *argv], capture_output=True,
                         text=True, env=env, check=True, timeout=60).stdout
    return [p for p in out.split(":") if p]


def test_lmod_show_lists_several_prepends_in_the_order_they_end_up(tmp_path):
    tree = tmp_path / "lua"
    write(tree / "ord/1.lua", ORDER_LUA)
    env = tool_env(tmp_path, tree)
    effect = Lmod(lmod_command()).show(["ord/1"], env)[str(tree / "ord/1.lua")]
    real = _loaded_value([lmod_command(), "bash", "load", "ord/1"], env, "ORDER_PATH")
    assert real == ["/b", "/a1", "/a2", "/z1", "/z2"]
    assert effect.path_entries("ORDER_PATH") == real


def test_em_show_lists_several_prepends_in_the_order_they_end_up(tmp_path):
    tree = tmp_path / "tcl"
    write(tree / "ord/1", ORDER_TCL)
    env = tool_env(tmp_path, tree)
    effect = EnvironmentModules(modulecmd_tcl()).show(["ord/1"], env)[str(tree / "ord/1")]
    real = _loaded_value([require_tool("tclsh"), modulecmd_tcl(), "bash", "load", "ord/1"], env, "ORDER_PATH")
    assert real == ["/b", "/a1", "/a2", "/z1", "/z2"]
    assert effect.path_entries("ORDER_PATH") == real
