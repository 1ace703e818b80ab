"""The envmod command line: argument errors and user errors are one line on stderr with their
exit code; list/show on an empty root. Runs the real ``python -m bridge``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import __version__, cli
from bridge.cli import COMMANDS, build_parser


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("envmod: error: "), lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


# ---- argument errors: exit 2, one line ---------------------------------------------------

def test_unknown_command_is_one_line_and_exit_2(run):
    proc = run("frobnicate")
    assert proc.returncode == 2
    assert "frobnicate" in one_error_line(proc)


def test_missing_argument_is_one_line_and_exit_2(run):
    proc = run("show")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "name" in line and "envmod show --help" in line


def test_unknown_option_is_one_line_and_exit_2(run):
    proc = run("list", "--frob")
    assert proc.returncode == 2
    assert "--frob" in one_error_line(proc)


def test_bad_choice_is_one_line_and_exit_2(run):
    proc = run("module", "myenv", "--module-type", "lua")
    assert proc.returncode == 2
    assert "lua" in one_error_line(proc)


def test_no_command_prints_help_and_exits_2(run):
    proc = run()
    assert proc.returncode == 2
    assert "COMMAND" in proc.stdout


# ---- bad names: exit 2, one line ---------------------------------------------------------

@pytest.mark.parametrize("command", ["show", "module", "remove"])
def test_bad_name_is_one_line_and_exit_2(run, command):
    proc = run(command, "bad/name")
    assert proc.returncode == 2
    assert "invalid environment name 'bad/name'" in one_error_line(proc)


def test_bad_name_to_create_is_refused_before_anything_else(run):
    proc = run("create", "has space", "--python", sys.executable, "--module-type", "lmod")
    assert proc.returncode == 2
    assert "invalid environment name" in one_error_line(proc)
    assert not (run.root / "envs").exists()


def test_multi_line_name_stays_one_line(run):
    proc = run("show", "two\nlines")
    assert proc.returncode == 2
    one_error_line(proc)


def test_reserved_name_is_one_line_and_exit_2(run):
    proc = run("show", "modules")
    assert proc.returncode == 2
    assert "reserved" in one_error_line(proc)


# ---- an empty root -------------------------------------------------------------------------

def test_list_on_an_empty_root_says_so(run):
    proc = run("list")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"no environments under {run.root / 'envs'}\n"


def test_list_json_on_an_empty_root_is_an_empty_list(run):
    proc = run("list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_show_on_an_empty_root_is_not_found_exit_4(run):
    proc = run("show", "myenv")
    assert proc.returncode == 4
    line = one_error_line(proc)
    assert "no environment named 'myenv'" in line and "envmod list" in line


def test_module_on_an_empty_root_is_not_found_exit_4(run):
    proc = run("module", "myenv")
    assert proc.returncode == 4
    one_error_line(proc)


def test_remove_on_an_empty_root_is_not_found_exit_4(run):
    proc = run("remove", "myenv", "--yes")
    assert proc.returncode == 4
    one_error_line(proc)


def test_root_prints_envmod_root(run):
    proc = run("root")
    assert (proc.returncode, proc.stdout) == (0, f"{run.root}\n")


def test_root_option_overrides_the_environment(run, tmp_path):
    proc = run("--root", str(tmp_path / "other"), "root")
    assert proc.stdout == f"{tmp_path / 'other'}\n"


def test_version(run):
    proc = run("--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, f"envmod {__version__}")


# ---- config and record errors ------------------------------------------------------------

def test_missing_site_config_is_one_line_and_exit_2(run, tmp_path):
    proc = run("list", extra_env={"ENVMOD_SITE_CONFIG": str(tmp_path / "missing.yaml")})
    assert proc.returncode == 2
    assert "ENVMOD_SITE_CONFIG" in one_error_line(proc)


def test_broken_user_config_is_one_line_and_exit_2(run, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("root: [unclosed\n")
    proc = run("list", extra_env={"ENVMOD_CONFIG": str(config)})
    assert proc.returncode == 2
    assert "not valid YAML" in one_error_line(proc)


def test_broken_record_is_one_line_and_exit_6(run):
    env_dir = run.root / "envs" / "myenv"
    env_dir.mkdir(parents=True)
    (env_dir / "envmod.yaml").write_text("envmod_record: 99\nname: myenv\n")
    proc = run("show", "myenv")
    assert proc.returncode == 6
    assert "schema 99" in one_error_line(proc)


def test_list_shows_a_broken_record_as_an_error_row(run):
    env_dir = run.root / "envs" / "myenv"
    env_dir.mkdir(parents=True)
    (env_dir / "envmod.yaml").write_text("envmod_record: 99\nname: myenv\n")
    proc = run("list", "--json")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["name"] == "myenv" and "schema 99" in row["error"]


def test_remove_without_yes_and_without_a_terminal_refuses(run):
    (run.root / "envs" / "myenv").mkdir(parents=True)
    proc = run("remove", "myenv")
    assert proc.returncode == 2
    assert "--yes" in one_error_line(proc)
    assert (run.root / "envs" / "myenv").is_dir()


# ---- the parser itself -------------------------------------------------------------------

def test_every_command_has_a_handler():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


@pytest.mark.parametrize("argv", [
    ["create", "e", "-q"], ["--root", "/r", "create", "e", "--with", "a", "b", "--module-type", "tcl"],
    ["--root=/r", "list", "--json"], ["show", "e", "--all-links"], ["check", "--all"],
    ["rebuild", "e", "--from-loaded"], ["module", "e"], ["remove", "e", "-y"],
    ["export", "e", "--format", "requirements", "-o", "f"], ["root"],
])
def test_a_command_parses_the_same_with_only_its_own_subparser_built(argv):
    # main builds only the subparser of the command it runs (the others cost a create's start)
    command = next(a for a in argv if a in COMMANDS)
    assert cli._named_command(argv) == command
    whole, own = build_parser(), build_parser(command)
    assert vars(own.parse_args(argv)) == vars(whole.parse_args(argv))
    subparsers = [next(a for a in p._actions if a.dest == "command").choices[command] for p in (whole, own)]
    assert subparsers[0].format_help() == subparsers[1].format_help()


@pytest.mark.parametrize("argv", [[], ["--help"], ["--version"], ["--ro", "/r", "list"], ["--root"],
                                  ["--root", "-x", "list"], ["frobnicate"], ["--", "list"]])
def test_help_version_and_unusual_command_lines_get_the_whole_parser(argv):
    assert cli._named_command(argv) is None


def test_create_collects_packages_and_requirement_files():
    args = build_parser().parse_args(["create", "e", "--with", "mpi4py", "h5py>=3", "-r", "a.txt", "-r", "b.txt"])
    assert args.packages == ["mpi4py", "h5py>=3"]
    assert args.requirement_files == [Path("a.txt"), Path("b.txt")]
    assert (args.backend, args.force, args.module_type) == (None, False, None)   # None: the config's, else venv


def test_description_that_is_not_utf8_gives_no_traceback(run):
    # argv bytes that do not decode reach Python as surrogates; they must be refused in one
    # line (or accepted), never crash the record writer with a traceback.
    base = Path(sys.base_prefix) / "bin" / "python3"
    if not base.is_file():
        pytest.skip("no base interpreter")
    proc = subprocess.run([sys.executable, "-m", "bridge", "create", "myenv", "--python", str(base),
                           "--module-type", "lmod", "--description", os.fsdecode(b"caf\xff")],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={"PATH": os.environ.get("PATH", ""), "HOME": str(run.root.parent / "home"),
                               "ENVMOD_ROOT": str(run.root), "LANG": "C.UTF-8"})
    assert "Traceback" not in proc.stderr, proc.stderr[-600:]
    if proc.returncode != 0:
        one_error_line(proc)


# ---- check: an env that cannot be checked is exit 2, and --all goes on past it -------------

def base_python() -> str:
    base = Path(sys.base_prefix) / "bin" / "python3"
    if not base.is_file():
        pytest.skip(f"no base interpreter at {base}")
    return str(base)


def create_env(run, name: str, python: str) -> Path:
    """A real env without packages (a few tenths of a second): no module system needed, as it
    loads no central modules."""
    proc = run("create", name, "--python", python, "--module-type", "lmod", "-q")
    assert proc.returncode == 0, proc.stderr
    return run.root / "envs" / name


def env_losing_its_python(run, tmp_path, name: str) -> Path:
    """An env made over a Python that is then removed: a real problem (exit 1)."""
    link = tmp_path / "gone" / "bin" / "python3"
    link.parent.mkdir(parents=True)
    link.symlink_to(base_python())
    env = create_env(run, name, str(link))
    link.unlink()
    return env


def check_line(proc: subprocess.CompletedProcess, name: str) -> str:
    """The one stdout line about env ``name``."""
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(f"{name}: ")]
    assert len(lines) == 1, proc.stdout
    return lines[0]


def test_check_of_a_missing_env_could_not_check_exit_2(run):
    proc = run("check", "nosuch")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.splitlines() == [check_line(proc, "nosuch")]
    assert check_line(proc, "nosuch").startswith("nosuch: could not check: no environment named 'nosuch'")
    proc = run("check", "nosuch", "--json")
    assert proc.returncode == 2
    report = json.loads(proc.stdout)
    assert (report["env"], report["status"], report["exit_code"]) == ("nosuch", "unchecked", 2)
    assert "no environment named 'nosuch'" in report["unchecked"]


BROKEN_RECORDS = {
    "future schema": (lambda good: b"envmod_record: 99\nname: myenv\n", "schema 99"),
    "not yaml": (lambda good: b"envmod_record: [1\nname: {\n", "not valid YAML"),
    "truncated": (lambda good: good[:len(good) // 3], "envmod.yaml"),
    "not utf-8": (lambda good: good[:40] + b"\xff\xfe" + good[40:], "not valid UTF-8"),
    "not a record": (lambda good: b"- just\n- a list\n", "not an envmod environment record"),
    "empty": (lambda good: b"", "not an envmod environment record"),
}


@pytest.mark.parametrize("how", sorted(BROKEN_RECORDS))
def test_check_of_a_broken_record_could_not_check_exit_2(run, how):
    env = create_env(run, "myenv", base_python())
    record = env / "envmod.yaml"
    corrupt, says = BROKEN_RECORDS[how]
    record.write_bytes(corrupt(record.read_bytes()))
    proc = run("check", "myenv")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    line = check_line(proc, "myenv")
    assert proc.stdout.splitlines() == [line]
    assert line.startswith("myenv: could not check: ") and says in line, line
    proc = run("check", "myenv", "--json")
    assert proc.returncode == 2, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["env"], report["status"], report["exit_code"]) == ("myenv", "unchecked", 2)
    assert says in report["unchecked"] and report["prefix"] == str(env)


def test_check_of_an_env_without_a_record_could_not_check_exit_2(run):
    (create_env(run, "myenv", base_python()) / "envmod.yaml").unlink()
    proc = run("check", "myenv")
    assert proc.returncode == 2, proc.stderr
    assert check_line(proc, "myenv").startswith("myenv: could not check: no environment record at ")


def test_check_all_goes_on_past_a_bad_record_and_the_worst_wins(run, tmp_path):
    create_env(run, "good", base_python())
    env_losing_its_python(run, tmp_path, "sick")
    broken = create_env(run, "broken", base_python())
    (broken / "envmod.yaml").write_text("envmod_record: 99\nname: broken\n")

    proc = run("check", "--all")
    assert proc.returncode == 2, proc.stdout + proc.stderr      # could not check outranks problems
    assert "Traceback" not in proc.stderr
    assert check_line(proc, "good").startswith("good: healthy")
    assert check_line(proc, "sick").startswith("sick: 1 problem")
    assert "is gone" in proc.stdout
    assert check_line(proc, "broken").startswith("broken: could not check: ") and "schema 99" in proc.stdout

    proc = run("check", "--all", "--json")
    assert proc.returncode == 2
    reports = {r["env"]: r for r in json.loads(proc.stdout)}
    assert {n: (r["status"], r["exit_code"]) for n, r in reports.items()} == {
        "broken": ("unchecked", 2), "good": ("healthy", 0), "sick": ("problems", 1)}
    assert "schema 99" in reports["broken"]["unchecked"]
    assert [f["code"] for f in reports["sick"]["findings"]] == ["python-missing"]

    shutil.rmtree(broken)
    assert run("check", "--all").returncode == 1
    shutil.rmtree(run.root / "envs" / "sick")
    assert run("check", "--all").returncode == 0


def test_check_all_on_an_empty_root_is_healthy(run):
    proc = run("check", "--all")
    assert (proc.returncode, proc.stdout) == (0, "no environments to check\n")


def test_check_of_a_bad_name_stays_a_usage_error(run):
    proc = run("check", "bad/name")
    assert proc.returncode == 2
    assert "invalid environment name 'bad/name'" in one_error_line(proc)
    assert proc.stdout == ""


def test_check_help_says_which_exit_status_wins(run):
    proc = run("check", "--help")
    assert proc.returncode == 0
    assert "2 wins over 1" in " ".join(proc.stdout.split())


def test_the_program_entry_point_passes_main_through_and_freezes_what_is_left(monkeypatch):
    """`envmod` runs `command_line`: main's exit code, and the collector set for a short run."""
    import gc

    monkeypatch.setattr(sys, "argv", ["envmod", "--version"])
    before = gc.get_threshold()
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.command_line()
        assert exit_info.value.code == 0
        assert gc.get_threshold()[0] == 50_000 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    monkeypatch.setattr(sys, "argv", ["envmod", "--root", "/nonexistent-envmod-root", "show", "no-such-env"])
    try:
        assert cli.command_line() != 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_reader_that_left_is_no_traceback(run):
    """'envmod show NAME | head': output to a pipe nobody reads any more ends quietly (141, as
    a shell reports SIGPIPE), not with a BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)           # the reader is gone before envmod writes a byte
    home = run.root.parent / "home"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "ENVMOD_ROOT": str(run.root),
           "ENVMOD_CONFIG": str(home / "no-config.yaml"), "LANG": "C.UTF-8"}
    try:
        proc = subprocess.run([sys.executable, "-m", "bridge", "root"], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 141
