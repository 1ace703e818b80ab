"""When uv may resolve for a uv env: pip's configuration (read by the real pip) translated to
uv's flags, or refused; uv's compile output read back. See tests/e2e/test_uv_resolve.py for the
creates themselves."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bridge.build.backends.uv_resolve import (
    compiled_pins,
    effective_install_options,
    named_only,
    pip_config,
    pip_config_files,
    uv_options,
)
from bridge.cache import JsonCache

STRATEGY = ["--index-strategy", "unsafe-best-match"]


def test_pips_index_settings_become_uvs_flags(tmp_path):
    flags, env = uv_options({"index-url": "https://mirror.example/simple",
                             "extra-index-url": "file:///a file:///b", "find-links": "/w1 /w2",
                             "no-index": "yes", "constraint": "c.txt", "disable-pip-version-check": "1"},
                            cwd=str(tmp_path))
    assert flags == [*STRATEGY, "--index-url", "https://mirror.example/simple",
                     "--extra-index-url", "file:///a", "--extra-index-url", "file:///b",
                     "--find-links", "/w1", "--find-links", "/w2", "--no-index",
                     "--constraint", str(tmp_path / "c.txt")]
    assert env == {}


def test_cert_and_timeout_become_uvs_variables(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    assert uv_options({"cert": str(bundle), "default-timeout": "180", "no-index": "0"}) == \
        (STRATEGY, {"SSL_CERT_FILE": str(bundle), "UV_HTTP_TIMEOUT": "180"})


@pytest.mark.parametrize("name, value", [("trusted-host", "example.org"), ("proxy", "http://p:3128"),
                                         ("pre", "1"), ("only-binary", ":all:"), ("no-index", "maybe"),
                                         ("cert", "/no/such/bundle"), ("timeout", "soon"), ("client-cert", "x")])
def test_a_setting_without_an_exact_translation_keeps_pip(name, value):
    assert uv_options({name: value}) is None


def test_install_section_beats_global_and_the_environment_beats_both():
    config = {"global.index-url": "g", "install.index-url": "i", "download.find-links": "d",
              "global.no-index": "1", ":env:.no-index": "0", "freeze.all": "1"}
    assert effective_install_options(config) == {"index-url": "i", "no-index": "0"}


def test_pip_config_is_pips_own_listing_and_cached_by_file_and_variable(tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text("[install]\nindex-url = https://mirror.example/simple\n")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PIP_CONFIG_FILE": str(conf),
           "PIP_FIND_LINKS": "/w"}
    cache = JsonCache(tmp_path / "cache")
    first = pip_config(sys.executable, env, cache)
    assert first is not None
    assert first["install.index-url"] == "https://mirror.example/simple" and first[":env:.find-links"] == "/w"
    assert str(conf) in pip_config_files(env)
    # a new file content (another size and mtime) is a new key: pip is asked again
    conf.write_text("[install]\ntrusted-host = example.org\n")
    os.utime(conf, ns=(1, 1))
    second = pip_config(sys.executable, env, cache)
    assert second is not None and "install.index-url" not in second and second["install.trusted-host"] == "example.org"
    third = pip_config(sys.executable, {**env, "PIP_NO_INDEX": "1"}, cache)
    assert third is not None and third[":env:.no-index"] == "1"
    assert len(list((tmp_path / "cache" / "pip-config").glob("*.json"))) == 3


def test_pip_config_files_follow_xdg_and_home():
    files = pip_config_files({"HOME": "/h", "XDG_CONFIG_DIRS": "/x1:/x2", "XDG_CONFIG_HOME": "/c"})
    assert files == ["/x1/pip/pip.conf", "/x2/pip/pip.conf", "/etc/pip.conf", "/h/.pip/pip.conf", "/c/pip/pip.conf"]


def test_compiled_pins_say_which_the_user_asked_for():
    text = ("a==1.0                    # via -r /tmp/x/request.in\n"
            "b==2.0                    # via a, -c /tmp/x/kept.txt\n"
            "c==3.0                    # via b, -r reqs, file.txt\n")
    assert compiled_pins(text) == [("a", "1.0", True), ("b", "2.0", False), ("c", "3.0", True)]
    assert compiled_pins("a @ file:///w/a.whl\n") is None
    assert compiled_pins("-e file:///src\n") is None


def test_only_named_requirements_let_uv_resolve(tmp_path: Path):
    assert named_only(["numpy", "cma>=3; python_version>'3'"], [])
    assert not named_only(["https://example.org/a-1.0-py3-none-any.whl"], [])
    (tmp_path / "pkgdir").mkdir()
    assert not named_only([str(tmp_path / "pkgdir")], [])
    (tmp_path / "inner.txt").write_text("-e ./pkgdir\n")
    (tmp_path / "reqs.txt").write_text("numpy  # central\n-r inner.txt\n")
    assert not named_only([], [tmp_path / "reqs.txt"])
    (tmp_path / "inner.txt").write_text("cma --hash=sha256:00\n")
    assert not named_only([], [tmp_path / "reqs.txt"])
    (tmp_path / "inner.txt").write_text("cma\n")
    assert named_only([], [tmp_path / "reqs.txt"])
