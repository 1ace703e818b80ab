"""bridge.config: defaults, site and user config files, ENVMOD_ROOT, and their precedence."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.config import Settings, check_module_type, load_settings, read_config_file
from bridge.errors import ConfigError


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def site_config(tmp_path: Path) -> Path:
    """An (empty) site config, so that /etc/envmod on the test machine cannot leak in."""
    path = tmp_path / "site.yaml"
    path.write_text("")
    return path


def env_for(home: Path, site_config: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), "ENVMOD_SITE_CONFIG": str(site_config), **extra}


def write_user_config(home: Path, text: str) -> Path:
    path = home / ".config" / "envmod" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_follow_home(home, site_config):
    settings = load_settings(env_for(home, site_config))
    assert settings.root == home / ".local/share/envmod"
    assert settings.cache_dir == home / ".cache/envmod"
    assert settings.module_type is None and settings.templates is None and settings.build_rules == ()


def test_absolute_xdg_dirs_are_used(home, site_config, tmp_path):
    settings = load_settings(env_for(home, site_config, XDG_DATA_HOME=str(tmp_path / "data"),
                                     XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert settings.root == tmp_path / "data/envmod"
    assert settings.cache_dir == tmp_path / "cache/envmod"


def test_relative_xdg_dirs_are_ignored(home, site_config):
    settings = load_settings(env_for(home, site_config, XDG_DATA_HOME="relative/data"))
    assert settings.root == home / ".local/share/envmod"


def test_derived_directories_live_under_the_root(tmp_path):
    settings = Settings(root=tmp_path / "r", cache_dir=tmp_path / "c")
    assert settings.envs_dir == tmp_path / "r/envs"
    assert settings.modules_dir == tmp_path / "r/modules"
    assert settings.logs_dir == tmp_path / "r/logs"
    assert settings.state_dir == tmp_path / "r/.envmod"


def test_with_root_makes_the_path_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings(root=Path("/x"), cache_dir=Path("/c")).with_root("rel")
    assert settings.root == tmp_path / "rel"


def test_user_config_sets_root_with_braced_variable(home, site_config, tmp_path):
    write_user_config(home, "root: ${SCRATCH}/envmod\n")
    settings = load_settings(env_for(home, site_config, SCRATCH=str(tmp_path / "scratch")))
    assert settings.root == tmp_path / "scratch/envmod"


def test_config_expands_unbraced_variables_from_the_given_environment(home, site_config, tmp_path):
    # load_settings takes the environment as an argument; $VAR must come from it, not from
    # the process environment.
    name = "ENVMOD_TEST_ONLY_IN_MAPPING"
    assert name not in os.environ
    write_user_config(home, f"root: ${name}/envmod\n")
    settings = load_settings(env_for(home, site_config, **{name: str(tmp_path / "w")}))
    assert settings.root == tmp_path / "w/envmod"


def test_config_expands_tilde_from_the_given_home(home, site_config):
    write_user_config(home, "root: ~/my-envs\n")
    settings = load_settings(env_for(home, site_config))
    assert settings.root == home / "my-envs"


def test_config_naming_an_unset_variable_is_refused(home, site_config):
    write_user_config(home, "root: ${ENVMOD_TEST_SURELY_UNSET}/x\n")
    with pytest.raises(ConfigError, match="unset variable"):
        load_settings(env_for(home, site_config))


def test_user_config_overrides_site_config(home, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(f"root: {tmp_path / 'site-root'}\nmodule_type: tcl\n")
    write_user_config(home, f"root: {tmp_path / 'user-root'}\n")
    settings = load_settings(env_for(home, site))
    assert settings.root == tmp_path / "user-root"
    assert settings.module_type == "tcl"
    assert settings.sources == (str(site), str(home / ".config/envmod/config.yaml"))


def test_envmod_root_overrides_every_config_file(home, site_config, tmp_path):
    write_user_config(home, f"root: {tmp_path / 'user-root'}\n")
    settings = load_settings(env_for(home, site_config, ENVMOD_ROOT=str(tmp_path / "env-root")))
    assert settings.root == tmp_path / "env-root"
    assert settings.sources[-1] == "ENVMOD_ROOT"


def test_envmod_config_names_the_user_config(home, site_config, tmp_path):
    user = tmp_path / "elsewhere.yaml"
    user.write_text("module_type: lmod\n")
    settings = load_settings(env_for(home, site_config, ENVMOD_CONFIG=str(user)))
    assert settings.module_type == "lmod"


def test_build_rules_of_site_and_user_are_both_kept_in_order(home, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(f"build_rules: {tmp_path / 'site-rules.yaml'}\n")
    write_user_config(home, f"build_rules: {tmp_path / 'user-rules.yaml'}\n")
    settings = load_settings(env_for(home, site))
    assert settings.build_rules == (tmp_path / "site-rules.yaml", tmp_path / "user-rules.yaml")


def test_missing_file_named_by_envmod_site_config_is_an_error(home, tmp_path):
    with pytest.raises(ConfigError, match="missing file"):
        load_settings(env_for(home, tmp_path / "nope.yaml"))


def test_unknown_setting_is_refused_with_the_known_ones(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("roots: /x\n")
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert "roots" in info.value.message
    assert "module_type" in info.value.hint


def test_invalid_yaml_is_a_one_line_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("root: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert "not valid YAML" in info.value.message
    assert "\n" not in info.value.message


def test_config_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- root\n- /x\n")
    with pytest.raises(ConfigError, match="mapping"):
        read_config_file(path)


def test_empty_config_file_is_no_settings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# nothing yet\n")
    assert read_config_file(path) == {}


def test_empty_path_setting_is_refused(home, site_config):
    write_user_config(home, "root: ''\n")
    with pytest.raises(ConfigError, match="non-empty path"):
        load_settings(env_for(home, site_config))


def test_bad_module_type_in_config_is_refused(home, site_config):
    write_user_config(home, "module_type: lua\n")
    with pytest.raises(ConfigError, match="lmod, tcl"):
        load_settings(env_for(home, site_config))


@pytest.mark.parametrize("value", ["lmod", "tcl"])
def test_known_module_types_pass(value):
    assert check_module_type(value) == value


def test_config_error_exit_code_is_2():
    assert ConfigError("x").exit_code == 2


# ---- check_root: the root is data (issue #9, item 5) ------------------------------------------

@pytest.mark.parametrize("char", ["$", "`", '"', "\\", ":", "\t", "\n", "\r", "\x1b"])
def test_a_root_holding_a_character_launchers_or_search_paths_cannot_take_is_refused_by_name(tmp_path, char):
    from bridge.config import check_root

    with pytest.raises(ConfigError) as info:
        check_root(tmp_path / f"a{char}b")
    line = info.value.one_line()
    assert f"contains {char!r}" in line and "--root" in line


def test_a_root_holding_three_single_quotes_is_refused(tmp_path):
    from bridge.config import check_root

    with pytest.raises(ConfigError, match="contains '''"):
        check_root(tmp_path / "a'''b")


@pytest.mark.parametrize("part", ["with space", "o'neil", "semi;colon & (paren) #hash {b} *?~<>|", "café"])
def test_a_root_of_text_the_launchers_quote_passes(tmp_path, part):
    from bridge.config import check_root

    assert check_root(tmp_path / part / "root") == tmp_path / part / "root"


def test_a_root_below_a_regular_file_is_refused_naming_the_file(tmp_path):
    from bridge.config import check_root

    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=f"{tmp_path / 'file'} is a file"):
        check_root(tmp_path / "file" / "deeper" / "root")
