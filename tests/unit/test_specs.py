"""bridge.build.install.check_spec / check_requirements / check_requirement_files: a package spec is a
requirement, a path or a URL, never a pip option (issue #9, item 7). Every front end (the CLI's
--with, Spack's --with, UserEnv's packages, requirements files) goes through these checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.build.install import check_requirement_files, check_requirements
from bridge.errors import EnvmodError, PlanError, UsageError


@pytest.mark.parametrize("spec", ["--index-url=http://example.invalid/simple", "--pre", "-i", "-e", "--no-index",
                                  "--extra-index-url=http://x", " --pre", "-rfile"])
def test_an_option_is_refused_as_a_spec(spec):
    with pytest.raises(UsageError) as info:
        check_requirements(["numpy", spec])
    assert "is a pip option, not a package" in info.value.one_line()


def test_a_directory_named_like_an_option_is_still_refused_and_its_path_spelling_passes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "--pre").mkdir()
    with pytest.raises(UsageError, match="pip option"):
        check_requirements(["--pre"])
    assert check_requirements(["./--pre"]) == []


@pytest.mark.parametrize("spec, name", [("numpy", "numpy"), ("H5Py>=3", "h5py"), ("mpi4py[x]==4.0; python_version>'3'",
                                                                                     "mpi4py"),
                                        ("foo @ https://example.invalid/foo.tar.gz", "foo")])
def test_requirements_pass_with_their_canonical_names(spec, name):
    assert check_requirements([spec]) == [name]


@pytest.mark.parametrize("spec", ["https://example.invalid/x.tar.gz", "git+https://example.invalid/x.git"])
def test_urls_pass(spec):
    assert check_requirements([spec]) == []


@pytest.mark.parametrize("spec, says", [("http://[bad", "Invalid IPv6 URL"), ("foo @ http://[::1", "Invalid IPv6 URL"),
                                        ('foo==1 ; os_name=="x', "not a valid requirement"), ("", "empty")])
def test_what_pip_fails_on_with_a_traceback_is_one_line_here(spec, says):
    # pip 22.3 answers these with 'ERROR: Exception:' and a traceback
    with pytest.raises(EnvmodError) as info:
        check_requirements([spec])
    assert says in info.value.one_line()
    assert "\n" not in info.value.one_line()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_requirements_file_of_requirements_includes_and_hashes_passes(tmp_path):
    write(tmp_path / "constraints.txt", "numpy<3\n")
    write(tmp_path / "more.txt", "-c constraints.txt\nscipy\n")
    (tmp_path / "src").mkdir()
    req = write(tmp_path / "req.txt", "# pinned\nnumpy==2.0 --hash=sha256:00 --hash sha256:11  # note\n"
                                      "-r more.txt\n--requirement=more.txt\nfoo \\\n  >=1\n"
                                      f"-e {tmp_path / 'src'}\nhttps://example.invalid/x.tar.gz\n")
    check_requirement_files([req])


@pytest.mark.parametrize("line", ["-i http://example.invalid/simple", "--index-url=http://x", "--extra-index-url http://x",
                                  "-f /tmp", "--find-links=/tmp", "--no-index", "--trusted-host x", "--pre",
                                  "--no-binary :all:", "--only-binary=:all:", "--prefer-binary", "--use-feature=x"])
def test_options_that_change_where_or_how_packages_come_are_refused_in_a_requirements_file(tmp_path, line):
    req = write(tmp_path / "req.txt", f"numpy\n{line}\n")
    with pytest.raises(UsageError) as info:
        check_requirement_files([req])
    text = info.value.one_line()
    assert f"{req} line 2" in text and "not allowed in a requirements file" in text


def test_an_option_after_a_requirement_other_than_hash_is_refused(tmp_path):
    req = write(tmp_path / "req.txt", "numpy --config-settings=a=b\n")
    with pytest.raises(UsageError, match="'--config-settings' after a requirement"):
        check_requirement_files([req])


def test_an_included_file_is_checked_too_relative_to_the_including_file(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "inner.txt", "--index-url=http://evil.invalid\n")
    req = write(tmp_path / "req.txt", "-r sub/inner.txt\n")
    with pytest.raises(UsageError, match="inner.txt line 1"):
        check_requirement_files([req])


def test_an_include_loop_is_read_once(tmp_path):
    write(tmp_path / "a.txt", "-r b.txt\nnumpy\n")
    write(tmp_path / "b.txt", "-r a.txt\n")
    check_requirement_files([tmp_path / "a.txt"])


def test_a_bad_requirement_line_names_file_line_and_reason(tmp_path):
    req = write(tmp_path / "req.txt", "numpy\n\nhttp://[bad\n")
    with pytest.raises(PlanError) as info:
        check_requirement_files([req])
    assert f"{req} line 3" in info.value.one_line() and "Invalid IPv6 URL" in info.value.one_line()


def test_a_missing_included_file_is_named(tmp_path):
    req = write(tmp_path / "req.txt", "-r nowhere.txt\n")
    with pytest.raises(UsageError, match="requirements file not found: nowhere.txt"):
        check_requirement_files([req])
