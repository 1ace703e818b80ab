"""bridge.store.names: which environment names are usable anywhere (directory, module name, modulefile)."""

from __future__ import annotations

import pytest

from bridge.errors import InvalidName, UsageError
from bridge.store.names import MAX_NAME_LENGTH, validate_env_name, validate_new_env_name


@pytest.mark.parametrize("name", ["myenv", "a", "A1", "9lives", "py3.11-mpi", "x_y-z", "a.b", "a" * MAX_NAME_LENGTH])
def test_usable_names_are_returned_unchanged(name):
    assert validate_env_name(name) == name


def test_empty_name_is_refused():
    with pytest.raises(InvalidName, match="empty"):
        validate_env_name("")


def test_name_longer_than_the_limit_is_refused():
    with pytest.raises(InvalidName, match=f"longer than {MAX_NAME_LENGTH}"):
        validate_env_name("a" * (MAX_NAME_LENGTH + 1))


@pytest.mark.parametrize("name", [".hidden", "..", ".", "-flag", "_under", "+plus"])
def test_name_must_start_with_a_letter_or_digit(name):
    with pytest.raises(InvalidName):
        validate_env_name(name)


@pytest.mark.parametrize("name", ["a/b", "../up", "a b", "a@b", "a:b", "a$b", "a;b", "a\"b", "a'b", "café",
                                  "a\nb", "trailing\n", "a\tb", "a*b", "a[b]", "a\\b", "a{b}"])
def test_name_with_a_character_outside_the_set_is_refused(name):
    with pytest.raises(InvalidName):
        validate_env_name(name)


@pytest.mark.parametrize("name", ["x.lua", "x.tcl", "envs", "modules", "logs"])
def test_reserved_names_are_refused(name):
    with pytest.raises(InvalidName, match="reserved"):
        validate_env_name(name)


def test_invalid_name_is_a_usage_error_with_exit_code_2():
    with pytest.raises(UsageError) as info:
        validate_env_name("a b")
    assert info.value.exit_code == 2


def test_invalid_name_message_is_one_line_with_a_hint():
    with pytest.raises(InvalidName) as info:
        validate_env_name("bad\nname")
    line = info.value.one_line()
    assert "\n" not in line
    assert "letters, digits" in line


@pytest.mark.parametrize("name", ["myenv", "A1", "9lives", "py3.11-mpi", "x_y-z", "end.", "end-", "end_"])
def test_new_names_of_the_accepted_set_are_returned_unchanged(name):
    assert validate_new_env_name(name) == name


@pytest.mark.parametrize("name, meaning", [("A+1", "variant"), ("a~b", "variant turned off"), ("a@1.0", "version"),
                                           ("a=b", "value"), ("trailing+", "variant")])
def test_new_names_with_module_specification_characters_are_refused_saying_why(name, meaning):
    # Environment Modules 5 reads these as variants/versions: 'module load A+1/py3.11' finds nothing.
    with pytest.raises(InvalidName) as info:
        validate_new_env_name(name)
    line = info.value.one_line()
    assert "Environment Modules" in line and meaning in line and "\n" not in line
    assert ". _ -" in line


def test_new_name_checks_also_apply_the_general_rules():
    for bad in ("", "a b", "-x", "envs"):
        with pytest.raises(InvalidName):
            validate_new_env_name(bad)


def test_an_existing_env_named_with_a_plus_can_still_be_addressed():
    # made before the rule: show, check and remove must still find it
    assert validate_env_name("x_y+z") == "x_y+z"
