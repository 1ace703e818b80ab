"""Modulefile rendering (bridge.emit): the Lua and Tcl text, read back by the real interpreters.

The rendered file is run by ``lua``/``tclsh`` with stub module functions that record their
arguments, so hostile text (a description, a package name, a path) is shown to arrive as data;
the hostile record is also loaded by the real Lmod and Environment Modules. A missing lua,
luac, tclsh or module tool skips locally and fails under ENVMOD_REQUIRE_SITE=1 (CI).
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from test_record import make_record
from tests.conftest import require_tool

from bridge.cli import COMMANDS
from bridge.emit.export import render_export
from bridge.emit.modulefile import (
    SYNTAXES,
    key_packages,
    module_context,
    module_setenv,
    module_version,
    modulefile_path,
    render_conflict,
    render_modulefile,
    write_modulefile,
)
from bridge.emit.templating import make_environment
from bridge.errors import ConfigError
from bridge.store.record import PackageRecord

HOSTILE_DESCRIPTION = ("it's \"quoted\" ]] ]==] $(touch /tmp/envmod-pwned) `id` [exec id] ${HOME} $HOME "
                       "{unbalanced \\ back\\slash\n second line\ttab \x01\x1b[0m ü ☃ 😀 -- comment # hash ; done")
HOSTILE_PREFIX = "/scratch/o'brien \"x\" $HOME [pwd] {b} ]]/envmod/envs/myenv"


def decode_calls(data: bytes) -> list[tuple]:
    """Calls written as ``name|nargs|len:arg len:arg ...\\n`` (lengths in bytes)."""
    calls, i = [], 0
    while i < len(data):
        bar = data.index(b"|", i)
        name = data[i:bar].decode()
        bar2 = data.index(b"|", bar + 1)
        nargs, i = int(data[bar + 1:bar2]), bar2 + 1
        args = []
        for _ in range(nargs):
            colon = data.index(b":", i)
            length = int(data[i:colon])
            args.append(data[colon + 1:colon + 1 + length].decode("utf-8"))
            i = colon + 1 + length
        assert data[i:i + 1] == b"\n"
        i += 1
        calls.append((name, *args))
    return calls


LUA_STUBS = r"""
local function capture(name)
  return function(...)
    local args = {...}
    io.write(name, "|", #args, "|")
    for _, a in ipairs(args) do
      a = tostring(a)
      io.write(#a, ":", a)
    end
    io.write("\n")
  end
end
for _, f in ipairs({"help", "whatis", "family", "depends_on", "setenv", "pushenv", "prepend_path",
                    "append_path", "load", "always_load", "prereq", "conflict", "extensions"}) do
  _G[f] = capture(f)
end
setmetatable(_G, {__index = function(_, k) error("modulefile used an unknown global: " .. tostring(k), 2) end})
dofile(arg[1])
"""

TCL_STUBS = r"""
fconfigure stdout -encoding utf-8 -translation lf
fconfigure stderr -encoding utf-8 -translation lf
proc capture {name args} {
    puts -nonewline "$name|[llength $args]|"
    foreach a $args { puts -nonewline "[string length [encoding convertto utf-8 $a]]:$a" }
    puts ""
}
foreach f {module-whatis setenv prepend-path append-path conflict module} {
    proc $f {args} "capture $f {*}\$args"
}
if {$with_new_commands} {
    proc family {args} {capture family {*}$args}
    proc depends-on {args} {capture depends-on {*}$args}
}
proc module-info {what args} {
    if {$what eq "mode"} { return [expr {$args eq {} ? "load" : [lindex $args 0] eq "load"}] }
    return {}
}
source -encoding utf-8 [lindex $argv 0]
if {[info procs ModulesHelp] ne {}} { ModulesHelp }
"""


def run_lua(path: Path, tmp: Path) -> list[tuple]:
    runner = tmp / "runner.lua"
    runner.write_text(LUA_STUBS)
    proc = subprocess.run([require_tool("lua"), str(runner), str(path)], capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return decode_calls(proc.stdout)


def run_tcl(path: Path, tmp: Path, new_commands: bool = True, env: dict | None = None):
    runner = tmp / "runner.tcl"
    runner.write_text(f"set with_new_commands {int(new_commands)}\n" + TCL_STUBS)
    proc = subprocess.run([require_tool("tclsh"), str(runner), str(path)], capture_output=True, timeout=30,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})})
    return proc


def tcl_calls(path: Path, tmp: Path, **kw) -> tuple[list[tuple], str]:
    proc = run_tcl(path, tmp, **kw)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return decode_calls(proc.stdout), proc.stderr.decode("utf-8")


@pytest.fixture
def hostile(tmp_path):
    record = make_record(HOSTILE_PREFIX, description=HOSTILE_DESCRIPTION)
    return record, module_context(record)


def rendered(tmp_path: Path, record, module_type: str) -> Path:
    path = tmp_path / ("module" + SYNTAXES[module_type].suffix)
    path.write_text(render_modulefile(record, module_type), encoding="utf-8")
    return path


# ---- Lua -------------------------------------------------------------------------------

def test_lua_modulefile_passes_luac(tmp_path, hostile):
    path = rendered(tmp_path, hostile[0], "lmod")
    proc = subprocess.run([require_tool("luac"), "-p", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_lua_description_arrives_as_data(tmp_path, hostile):
    record, _ = hostile
    calls = run_lua(rendered(tmp_path, record, "lmod"), tmp_path)
    assert ("whatis", f"Description: {HOSTILE_DESCRIPTION}") in calls
    help_text = next(c[1] for c in calls if c[0] == "help")
    assert help_text.startswith(f"envmod environment myenv: {HOSTILE_DESCRIPTION}\n")


def test_lua_calls_match_the_record(tmp_path, hostile):
    record, ctx = hostile
    calls = run_lua(rendered(tmp_path, record, "lmod"), tmp_path)
    expected = ([("help", ctx["help"])] + [("whatis", w) for w in ctx["whatis"]] + [("family", "envmod")]
                + [("depends_on", m) for m in record.module.depends_on]
                + ([("extensions", ",".join(ctx["extensions"]))] if ctx["extensions"] else [])
                + [("setenv", "VIRTUAL_ENV", HOSTILE_PREFIX), ("setenv", "PYTHONNOUSERSITE", "1"),
                   ("setenv", "ENVMOD_ENV", "myenv"), ("setenv", "ENVMOD_RECORD", HOSTILE_PREFIX + "/envmod.yaml"),
                   ("prepend_path", "PATH", HOSTILE_PREFIX + "/bin")])
    assert calls == expected


# ---- Tcl -------------------------------------------------------------------------------

def test_tcl_description_arrives_as_data(tmp_path, hostile):
    record, _ = hostile
    calls, _ = tcl_calls(rendered(tmp_path, record, "tcl"), tmp_path)
    assert ("module-whatis", f"Description: {HOSTILE_DESCRIPTION}") in calls


def test_tcl_help_prints_the_help_text(tmp_path, hostile):
    record, ctx = hostile
    _, stderr = tcl_calls(rendered(tmp_path, record, "tcl"), tmp_path)
    assert stderr == ctx["help"] + "\n"


def test_tcl_calls_match_the_record(tmp_path, hostile):
    record, ctx = hostile
    calls, _ = tcl_calls(rendered(tmp_path, record, "tcl"), tmp_path)
    expected = ([("module-whatis", w) for w in ctx["whatis"]] + [("family", "envmod")]
                + [("depends-on", m) for m in record.module.depends_on]
                + ([("module-whatis", "Extensions: " + ", ".join(ctx["extensions"]))] if ctx["extensions"] else [])
                + [("setenv", "VIRTUAL_ENV", HOSTILE_PREFIX), ("setenv", "PYTHONNOUSERSITE", "1"),
                   ("setenv", "ENVMOD_ENV", "myenv"), ("setenv", "ENVMOD_RECORD", HOSTILE_PREFIX + "/envmod.yaml"),
                   ("prepend-path", "PATH", HOSTILE_PREFIX + "/bin")])
    assert calls == expected


def test_tcl_before_modules_5_1_loads_dependencies_with_module_load(tmp_path, hostile):
    record, _ = hostile
    calls, _ = tcl_calls(rendered(tmp_path, record, "tcl"), tmp_path, new_commands=False)
    assert [c for c in calls if c[0] == "module"] == [("module", "load", m) for m in record.module.depends_on]
    assert not any(c[0] in ("family", "depends-on") for c in calls)


def test_tcl_before_modules_5_1_refuses_beside_another_env(tmp_path, hostile):
    record, _ = hostile
    proc = run_tcl(rendered(tmp_path, record, "tcl"), tmp_path, new_commands=False, env={"ENVMOD_ENV": "other"})
    assert proc.returncode != 0
    assert "envmod environment other is already loaded: unload it first" in proc.stderr.decode()


def test_tcl_before_modules_5_1_reloading_the_same_env_is_fine(tmp_path, hostile):
    record, _ = hostile
    proc = run_tcl(rendered(tmp_path, record, "tcl"), tmp_path, new_commands=False, env={"ENVMOD_ENV": "myenv"})
    assert proc.returncode == 0, proc.stderr.decode()


def test_tcl_modulefile_starts_with_the_magic_cookie(hostile):
    assert render_modulefile(hostile[0], "tcl").startswith("#%Module")


# ---- hostile text everywhere a record puts text: description, package names, the prefix ------
# Each value must arrive exactly, and nothing in it may run: every injection below would touch
# the marker file (Lua's os.execute, Tcl's exec, a shell's $(...) and backticks).

MARKER = "@MARKER@"
HOSTILE_TEXT = ("]] ]=] ]==] [[ [==[ \" ' \\ \\\\ $ $HOME ${HOME} $$ {b} "
                "[exec touch @MARKER@] $(touch @MARKER@) `touch @MARKER@` "
                "\") os.execute(\"touch @MARKER@\") -- ]] os.execute(\"touch @MARKER@\") --[[ "
                "\"; exec touch @MARKER@; \" } ; exec touch @MARKER@ ; { "
                "\n second line\r\n\ttab \x01\x07\x08\x0b\x0c\x1b[31m\x1f\x7f "
                "ü ☃ 😀 日本語 \u2028\u00a0 ends in a backslash \\")


def hostile_everywhere(tmp_path: Path, line_breaks_in_paths: bool = True):
    """A record with HOSTILE_TEXT in its description, in a requested compiled package's name,
    version and build module, in a dependency's name, and in its prefix; and the marker file
    the text's injections would create."""
    marker = tmp_path / "pwned"
    text = HOSTILE_TEXT.replace(MARKER, str(marker))
    path_text = text if line_breaks_in_paths else text.replace("\r", "").replace("\n", "")
    packages = [PackageRecord(name="pkg " + text, version="1.0 " + text, install="source", requested=True,
                              built_against=["openmpi/4.1.4 " + text]),
                PackageRecord(name="dep " + text, version="2", install="wheel")]
    record = make_record(str(tmp_path / ("env " + path_text)), description=text, packages=packages)
    ctx = module_context(record)
    # the text really is in every place checked below
    assert f"Description: {text}" in ctx["whatis"] and f"pkg {text} 1.0 {text}" in key_packages(record)
    assert f"compiled:   pkg {text}" in ctx["help"] and ("VIRTUAL_ENV", record.prefix) in ctx["setenv"]
    assert path_text in record.prefix
    return record, ctx, text, marker


def expected_calls(record, ctx, module_type: str) -> list[tuple]:
    """Every call the rendered modulefile makes, with the values the record holds."""
    if module_type == "lmod":
        return ([("help", ctx["help"])] + [("whatis", w) for w in ctx["whatis"]] + [("family", "envmod")]
                + [("depends_on", m) for m in record.module.depends_on]
                + ([("extensions", ",".join(ctx["extensions"]))] if ctx["extensions"] else [])
                + [("setenv", k, v) for k, v in ctx["setenv"]] + [("prepend_path", k, v) for k, v in ctx["prepend_path"]])
    return ([("module-whatis", w) for w in ctx["whatis"]] + [("family", "envmod")]
            + [("depends-on", m) for m in record.module.depends_on]
            + ([("module-whatis", "Extensions: " + ", ".join(ctx["extensions"]))] if ctx["extensions"] else [])
            + [("setenv", k, v) for k, v in ctx["setenv"]] + [("prepend-path", k, v) for k, v in ctx["prepend_path"]])


def test_hostile_text_everywhere_round_trips_in_lua(tmp_path):
    record, ctx, _, marker = hostile_everywhere(tmp_path)
    path = rendered(tmp_path, record, "lmod")
    proc = subprocess.run([require_tool("luac"), "-p", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert run_lua(path, tmp_path) == expected_calls(record, ctx, "lmod")
    assert not marker.exists(), "text in a Lua modulefile ran code"


@pytest.mark.parametrize("new_commands", [True, False], ids=["modules-5.1", "before-5.1"])
def test_hostile_text_everywhere_round_trips_in_tclsh(tmp_path, new_commands):
    record, ctx, _, marker = hostile_everywhere(tmp_path)
    calls, stderr = tcl_calls(rendered(tmp_path, record, "tcl"), tmp_path, new_commands=new_commands)
    expected = expected_calls(record, ctx, "tcl")
    if not new_commands:
        expected = [c for c in expected if c[0] != "family"]
        expected = [("module", "load", c[1]) if c[0] == "depends-on" else c for c in expected]
    assert calls == expected
    assert stderr == ctx["help"] + "\n"
    assert not marker.exists(), "text in a Tcl modulefile ran code"


def _real_tool_run(tmp_path: Path, tool: str, module_type: str):
    """The hostile record's modulefile, loaded and described by the real tool; its shell code
    evaluated by bash. Paths hold no line break here: neither tool's bash output can carry one
    in a value (envmod refuses one in its root, bridge.store.root)."""
    from test_modsys import lmod_command, modulecmd_tcl, tool_env

    record, ctx, text, marker = hostile_everywhere(tmp_path, line_breaks_in_paths=False)
    record.module.depends_on = []  # no central modules to find in this tree
    ctx = module_context(record)
    modules = tmp_path / "modules"
    write_modulefile(record, module_type, modules)
    cmd = [lmod_command()] if tool == "lmod" else [require_tool("tclsh"), modulecmd_tcl()]
    env = dict(tool_env(tmp_path, modules), LC_ALL="C.UTF-8")

    def tool_run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([*cmd, "bash", *args, record.module.name], capture_output=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return proc

    load = tool_run("load")
    shown = subprocess.run([require_tool("bash"), "--noprofile", "--norc", "-c",
                            'eval "$1" && printf "%s\\0" "$VIRTUAL_ENV" "$ENVMOD_RECORD" "$ENVMOD_ENV" "$PATH"',
                            "bash", load.stdout.decode("utf-8")], capture_output=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr.decode(errors="replace")
    values = shown.stdout.decode("utf-8").split("\0")
    assert values[:3] == [record.prefix, record.prefix + "/envmod.yaml", "myenv"]
    assert values[3].startswith(ctx["prepend_path"][0][1] + ":")
    help_err = tool_run("help").stderr.decode("utf-8")
    assert ctx["help"] in help_err
    whatis_err = tool_run("whatis").stderr.decode("utf-8")
    for line in ctx["whatis"]:
        assert line in whatis_err
    assert not marker.exists(), f"text in a {module_type} modulefile ran code in {tool}"


def test_hostile_text_everywhere_round_trips_in_real_environment_modules(tmp_path):
    _real_tool_run(tmp_path, "envmodules", "tcl")


def test_hostile_text_everywhere_round_trips_in_real_lmod(tmp_path):
    _real_tool_run(tmp_path, "lmod", "lmod")


# ---- what the text says ----------------------------------------------------------------

def test_help_mentions_only_commands_that_exist(hostile):
    import re

    help_text = module_context(hostile[0])["help"]
    mentioned = set(re.findall(r"'envmod (\w+)", help_text))
    assert mentioned and mentioned <= set(COMMANDS), f"help names {sorted(mentioned - set(COMMANDS))}"


def test_record_without_packages_says_so(tmp_path):
    record = make_record(tmp_path, packages=[])
    assert key_packages(record) == "none beyond the central Python's"


def test_key_packages_prefers_requested_and_counts_the_rest(tmp_path):
    pkgs = [PackageRecord(name=f"p{i}", version="1", install="wheel", requested=True) for i in range(10)]
    record = make_record(tmp_path, packages=pkgs + [PackageRecord(name="dep", version="2", install="wheel")])
    assert key_packages(record, limit=3) == "p0 1, p1 1, p2 1, and 7 more"


def test_module_version_is_python_major_minor():
    assert module_version("3.11.2") == "py3.11"
    assert module_version("3.9") == "py3.9"


def test_record_without_dependencies_says_no_central_modules(tmp_path):
    record = make_record(tmp_path)
    record.module.depends_on = []
    assert "loads:      no central modules" in module_context(record)["help"]


# ---- writing ---------------------------------------------------------------------------

@pytest.mark.parametrize("module_type,suffix", [("lmod", ".lua"), ("tcl", "")])
def test_write_modulefile_puts_it_under_the_module_name(tmp_path, module_type, suffix):
    record = make_record(tmp_path / "env")
    path = write_modulefile(record, module_type, tmp_path / "modules")
    assert path == tmp_path / "modules" / f"myenv/py3.11{suffix}" == modulefile_path(tmp_path / "modules", record, module_type)
    assert path.read_text(encoding="utf-8") == render_modulefile(record, module_type)


def test_written_modulefile_is_world_readable_and_alone(tmp_path):
    path = write_modulefile(make_record(tmp_path / "env"), "lmod", tmp_path / "modules")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(path.parent) == [path.name]


def test_rewriting_a_modulefile_replaces_it(tmp_path):
    record = make_record(tmp_path / "env")
    write_modulefile(record, "lmod", tmp_path / "modules")
    record.description = "changed"
    path = write_modulefile(record, "lmod", tmp_path / "modules")
    assert 'whatis("Description: changed")' in path.read_text()
    assert os.listdir(path.parent) == [path.name]


# ---- site templates: StrictUndefined and the finalize guard ----------------------------

def site_template(tmp_path: Path, text: str, name: str = "modulefiles/env.lua.j2") -> Path:
    site = tmp_path / "site-templates"
    (site / name).parent.mkdir(parents=True, exist_ok=True)
    (site / name).write_text(text)
    return site


def test_site_template_printing_a_raw_value_fails(tmp_path):
    site = site_template(tmp_path, 'whatis("{{ name }}")\n')
    with pytest.raises(ConfigError, match="unquoted value") as caught:
        render_modulefile(make_record(tmp_path), "lmod", site)
    assert "modulefiles/env.lua.j2, line 1)" in caught.value.one_line()
    assert f"fix the site templates in {site}" in caught.value.one_line()


def test_site_template_using_an_undefined_name_fails(tmp_path):
    site = site_template(tmp_path, "whatis({{ no_such_value | lua }})\n")
    with pytest.raises(ConfigError, match="'no_such_value' is undefined"):
        render_modulefile(make_record(tmp_path), "lmod", site)


def test_site_template_extending_the_builtin_overrides_one_block(tmp_path):
    site = site_template(tmp_path, '{% extends "builtin/modulefiles/env.lua.j2" %}\n'
                                   '{% block footer %}\nsetenv("SITE_NOTE", {{ ("see " ~ name) | lua }})\n{% endblock %}\n')
    text = render_modulefile(make_record(tmp_path), "lmod", site)
    assert text.rstrip().endswith('setenv("SITE_NOTE", "see myenv")')
    assert text.startswith(render_modulefile(make_record(tmp_path), "lmod").rstrip())


def test_site_template_override_runs_in_lua(tmp_path):
    site = site_template(tmp_path, '{% extends "builtin/modulefiles/env.lua.j2" %}\n'
                                   '{% block conflict %}\nconflict({{ "other" | lua }})\n{% endblock %}\n')
    path = tmp_path / "m.lua"
    path.write_text(render_modulefile(make_record(tmp_path), "lmod", site))
    calls = run_lua(path, tmp_path)
    assert ("conflict", "other") in calls and ("family", "envmod") not in calls


@pytest.mark.parametrize("module_type", ["lmod", "tcl"])
def test_conflict_text_for_other_writers_is_the_modulefiles_own(tmp_path, module_type):
    # EasyBuild's UserEnv writes its own modules with these pieces: the same guard, the same variables
    record = make_record(tmp_path)
    text = render_modulefile(record, module_type)
    assert render_conflict(module_type, record.name) in text
    assert module_setenv(record.name, record.prefix) == module_context(record)["setenv"]
    # a site's conflict file changes both
    site = site_template(tmp_path, 'conflict({{ ("site-" ~ name) | lua }})\n', name="modulefiles/conflict.lua.j2")
    assert render_conflict("lmod", record.name, site) == 'conflict("site-myenv")\n'
    if module_type == "lmod":
        assert 'conflict("site-myenv")' in render_modulefile(record, "lmod", site)


def test_site_directory_without_the_template_falls_back_to_the_builtin(tmp_path):
    site = site_template(tmp_path, "unrelated\n", name="other.j2")
    assert render_modulefile(make_record(tmp_path), "tcl", site) == render_modulefile(make_record(tmp_path), "tcl")


# ---- Jinja2's bytecode cache (bridge.emit.template_cache) --------------------------------

def cache_entries(cache: Path) -> list[Path]:
    """The bytecode cache's entries: one private directory per user inside ``cache_dir``."""
    directory = cache / f"templates-{os.getuid()}"
    return sorted(directory.iterdir()) if directory.is_dir() else []


def contexts_of_every_kind(tmp_path: Path) -> list:
    plain = make_record(tmp_path / "env")
    hostile_record = make_record(HOSTILE_PREFIX, name="x", description=HOSTILE_DESCRIPTION)
    bare = make_record(tmp_path / "bare", packages=[], description="")
    bare.module.depends_on = []
    many = make_record(tmp_path / "many", packages=[PackageRecord(name=f"p{i}", version="1", install="wheel")
                                                    for i in range(12)])
    return [plain, hostile_record, bare, many, hostile_everywhere(tmp_path)[0]]


@pytest.mark.parametrize("module_type", sorted(SYNTAXES))
def test_template_cache_gives_the_same_text(tmp_path, module_type):
    """Hostile, empty and long records render the same from a cold cache, a warm one and none."""
    cache = tmp_path / "cache"
    for record in contexts_of_every_kind(tmp_path):
        expected = render_modulefile(record, module_type)
        assert render_modulefile(record, module_type, cache_dir=cache) == expected     # cold: fills it
        assert cache_entries(cache)
        assert render_modulefile(record, module_type, cache_dir=cache) == expected     # warm: reads it
        for name in ("myenv", "o'brien $(id) ]]"):
            assert render_conflict(module_type, name, cache_dir=cache) == render_conflict(module_type, name)
    record = make_record(tmp_path)
    assert render_export(record, "requirements", cache_dir=cache) == render_export(record, "requirements")


def test_template_cache_directory_is_private(tmp_path):
    render_modulefile(make_record(tmp_path), "lmod", cache_dir=tmp_path / "cache")
    directory = tmp_path / "cache" / f"templates-{os.getuid()}"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert [p.name for p in cache_entries(tmp_path / "cache") if p.name.endswith(".tmp")] == []


def test_template_cache_sees_a_changed_site_template(tmp_path):
    site = site_template(tmp_path, '{% extends "builtin/modulefiles/env.lua.j2" %}\n'
                                   '{% block footer %}\n-- first\n{% endblock %}\n')
    record = make_record(tmp_path)
    assert "-- first" in render_modulefile(record, "lmod", site, tmp_path / "cache")
    site_template(tmp_path, '{% extends "builtin/modulefiles/env.lua.j2" %}\n'
                            '{% block footer %}\n-- second\n{% endblock %}\n')
    text = render_modulefile(record, "lmod", site, tmp_path / "cache")
    assert "-- second" in text and "-- first" not in text


def test_a_site_template_added_later_replaces_the_cached_builtin(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    record, cache = make_record(tmp_path), tmp_path / "cache"
    builtin_text = render_modulefile(record, "tcl", site, cache)
    (site / "modulefiles").mkdir()
    (site / "modulefiles" / "conflict.tcl.j2").write_text("# site guard for {{ name|tcl }}\n")
    text = render_modulefile(record, "tcl", site, cache)
    assert '# site guard for "myenv"' in text and text != builtin_text


def test_template_cache_keeps_the_finalize_guard(tmp_path):
    render_modulefile(make_record(tmp_path), "lmod", cache_dir=tmp_path / "cache")
    site = site_template(tmp_path, 'whatis("{{ name }}")\n')
    for _ in range(2):     # the second time from the cache
        with pytest.raises(ConfigError, match=r"unquoted value .*modulefiles/env\.lua\.j2, line 1\)"):
            render_modulefile(make_record(tmp_path), "lmod", site, tmp_path / "cache")


def test_a_failing_render_from_the_cache_names_file_and_line(tmp_path):
    site = site_template(tmp_path, "family({{ family | lua }})\nconflict({{ nothing | lua }})\n",
                         name="modulefiles/conflict.lua.j2")
    for _ in range(2):
        with pytest.raises(ConfigError, match=r"'nothing' is undefined \(.*conflict\.lua\.j2, line 2\)"):
            render_conflict("lmod", "n", site, tmp_path / "cache")


def test_a_damaged_cache_entry_is_compiled_again(tmp_path):
    cache, record = tmp_path / "cache", make_record(tmp_path)
    expected = render_modulefile(record, "tcl", cache_dir=cache)
    for entry in cache_entries(cache):
        data = entry.read_bytes()
        entry.write_bytes(data[:len(data) // 2])     # cut inside the pickled checksum or the code
    assert render_modulefile(record, "tcl", cache_dir=cache) == expected
    assert render_modulefile(record, "tcl", cache_dir=cache) == expected


def plant_entry(cache: Path, name: str, evil_source: str) -> Path:
    """A cache entry for the built-in template ``name`` whose code renders ``evil_source``: what
    another user who could write the entry would put there."""
    from jinja2.bccache import Bucket

    from bridge.emit.template_cache import bytecode_cache

    env = make_environment()
    source, filename, _ = env.loader.get_source(env, name)
    bcc = bytecode_cache(cache)
    bucket = Bucket(env, bcc.get_cache_key(name, filename), bcc.get_source_checksum(source))
    bucket.code = env.compile(evil_source, name, filename)
    bcc.dump_bytecode(bucket)
    (entry,) = [p for p in cache_entries(cache) if p.name.endswith(".cache")]
    return entry


def test_a_cache_entry_others_can_write_is_not_run(tmp_path):
    cache = tmp_path / "cache"
    entry = plant_entry(cache, "modulefiles/conflict.lua.j2", "-- planted {{ name | lua }}\n")
    assert render_conflict("lmod", "n", cache_dir=cache) == '-- planted "n"\n'    # this user's entry is used
    for mode in (0o664, 0o646):
        entry.chmod(mode)
        assert render_conflict("lmod", "n", cache_dir=cache) == render_conflict("lmod", "n")
    entry.chmod(0o644)
    os.chown(entry, 4242, -1) if os.getuid() == 0 else pytest.skip("chown to another user needs root")
    assert render_conflict("lmod", "n", cache_dir=cache) == render_conflict("lmod", "n")


@pytest.mark.parametrize("make_it", ["symlink", "other owner"])
def test_a_cache_directory_not_this_users_own_is_not_used(tmp_path, make_it):
    cache = tmp_path / "cache"
    cache.mkdir()
    directory = cache / f"templates-{os.getuid()}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    if make_it == "symlink":
        directory.symlink_to(elsewhere)
    else:
        if os.getuid() != 0:
            pytest.skip("chown to another user needs root")
        directory.mkdir(mode=0o700)
        os.chown(directory, 4242, -1)
    record = make_record(tmp_path)
    assert render_modulefile(record, "lmod", cache_dir=cache) == render_modulefile(record, "lmod")
    assert list(elsewhere.iterdir()) == [] and (make_it == "symlink" or list(directory.iterdir()) == [])


def test_a_loose_cache_directory_of_this_user_is_tightened(tmp_path):
    directory = tmp_path / "cache" / f"templates-{os.getuid()}"
    directory.mkdir(parents=True)
    directory.chmod(0o777)
    render_modulefile(make_record(tmp_path), "lmod", cache_dir=tmp_path / "cache")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700 and cache_entries(tmp_path / "cache")


def test_unwritable_template_cache_still_renders(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    assert render_modulefile(make_record(tmp_path), "tcl", cache_dir=blocker) == \
        render_modulefile(make_record(tmp_path), "tcl")


def test_a_cache_that_cannot_take_an_entry_still_renders(tmp_path):
    """Writing the entry fails for real (a file size limit of 0: EFBIG, as on a full disk): the
    render still succeeds and no temp file is left behind."""
    import resource
    import signal

    cache, record = tmp_path / "cache", make_record(tmp_path)
    expected = render_modulefile(record, "tcl")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, limits[1]))
    try:
        text = render_modulefile(record, "tcl", cache_dir=cache)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert text == expected
    assert (cache / f"templates-{os.getuid()}").is_dir() and cache_entries(cache) == []


def test_missing_site_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        make_environment(tmp_path / "nope")
    with pytest.raises(ConfigError, match="does not exist"):
        render_modulefile(make_record(tmp_path), "lmod", tmp_path / "nope", tmp_path / "cache")


def test_quoting_filters_are_all_available(tmp_path):
    env = make_environment()
    out = env.from_string("{{ v | lua }} {{ v | tcl }} {{ v | sh }}").render(v="a b")
    assert out == "\"a b\" \"a b\" 'a b'"
