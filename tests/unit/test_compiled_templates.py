"""Templates compiled to plain Python (bridge.emit.compiled): the same text as Jinja2 gives,
no Jinja2 import once compiled, Jinja2 for everything outside the subset, and a cache that
notices every change of the files a template was made from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_record import make_record
from test_templates import HOSTILE_DESCRIPTION, HOSTILE_PREFIX

from bridge.emit import compiled
from bridge.emit.export import render_export
from bridge.emit.modulefile import CONFLICT_TEMPLATES, SYNTAXES, module_context, render_modulefile
from bridge.emit.templating import (TemplateFailure, builtin_template_dir, make_environment, quoting_filters,
                                    render_template)
from bridge.errors import ConfigError
from bridge.record import PackageRecord

REPO = Path(__file__).resolve().parents[2]


def jinja2_render(name: str, context: dict, site: Path | None = None) -> str:
    return make_environment(site).get_template(name).render(context)


def cached(name: str, site: Path | None, cache: Path):
    """The cache's render function of ``name``, or None."""
    return compiled.load(name, site, cache, quoting_filters())


def compiled_render(name: str, context: dict, cache: Path, site: Path | None = None):
    """Compile ``name`` (first render fills the cache) and render ``context`` with the result."""
    render_template(name, context, site, cache)
    fast = cached(name, site, cache)
    assert fast is not None, f"{name} was not compiled"
    return fast(context)


def site_with(tmp_path: Path, files: dict[str, str]) -> Path:
    """A site template directory holding ``files`` (name -> text)."""
    site = tmp_path / "site"
    for name, text in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    return site


def contexts(tmp_path: Path) -> list[dict]:
    plain = make_record(tmp_path / "env")
    hostile = make_record(Path(HOSTILE_PREFIX), name="x", description=HOSTILE_DESCRIPTION)
    bare = make_record(tmp_path / "bare", packages=[], description="")
    many = make_record(tmp_path / "many", packages=[PackageRecord(name=f"p{i}", version="1", install="wheel")
                                                    for i in range(12)])
    bare.module.depends_on = []
    return [module_context(r) for r in (plain, hostile, bare, many)]


@pytest.mark.parametrize("module_type", sorted(SYNTAXES))
def test_shipped_modulefile_templates_compile_to_the_same_text(tmp_path, module_type):
    name = SYNTAXES[module_type].template
    for context in contexts(tmp_path):
        assert compiled_render(name, context, tmp_path / "cache") == jinja2_render(name, context)


@pytest.mark.parametrize("module_type", sorted(CONFLICT_TEMPLATES))
def test_shipped_conflict_templates_compile_to_the_same_text(tmp_path, module_type):
    for env_name in ("myenv", "o'brien $(id) ]]"):
        context = {"family": "envmod", "name": env_name}
        name = CONFLICT_TEMPLATES[module_type]
        assert compiled_render(name, context, tmp_path / "cache") == jinja2_render(name, context)


def test_export_template_compiles_to_the_same_text(tmp_path):
    record = make_record(tmp_path)
    assert render_export(record, "requirements", cache_dir=tmp_path / "cache") == render_export(record, "requirements")
    assert any(p.name.startswith("py-export-") for p in (tmp_path / "cache" / "templates").iterdir())
    assert render_export(record, "requirements", cache_dir=tmp_path / "cache") == render_export(record, "requirements")


class Thing:
    label = "attr"

    def __init__(self, n: int) -> None:
        self.n = n


SUBSET_CASES = {
    "for-else": "{% for x in xs %}[{{ x|sh }}]{% else %}none{% endfor %}\n",
    "nested-for": "{% for a, b in pairs %}{% for x in xs %}{{ (a ~ b ~ x)|lua }};{% endfor %}\n{% endfor %}",
    "if-chain": "{% if n > 2 and not flag %}big{% elif n == 2 or flag %}two-or-flag{% else %}small{% endif %}\n",
    "in-notin": "{% if 'b' in xs %}has{% endif %}{% if 'z' not in xs %} lacks{% endif %}\n",
    "attr-item": "{{ thing.label|tcl }} {{ thing.n|tcl }} {{ d.key|tcl }} {{ d['key']|sh }} {{ xs[1]|lua }}\n",
    "join": "{{ xs|join(', ')|comment }} {{ xs|join|sh }}\n",
    "literals": "{% for x in ['a', 1, none, true] %}{{ x|sh }}{% endfor %}{% for t in (1, 2) %}{{ t|lua }}{% endfor %}\n",
    "blocks": "{% block outer %}<{% block inner %}in{% endblock %}>{% endblock %}\n",
    "whitespace": "  {% for x in xs %}\n    {{ x|sh }}\n  {% endfor %}\n{%- if flag -%}  yes  {%- endif %}\n",
}


@pytest.mark.parametrize("case", sorted(SUBSET_CASES))
def test_subset_renders_as_jinja2_does(tmp_path, case):
    site = site_with(tmp_path, {"t/case.j2": SUBSET_CASES[case]})
    for n, flag, xs in ((1, False, ["a", "b", "c"]), (2, True, []), (3, False, ["z", "$(id)"])):
        context = {"xs": xs, "n": n, "flag": flag, "pairs": [("p", 1), ("q", 2)], "thing": Thing(n),
                   "d": {"key": f"v'{n}"}}
        if case == "attr-item" and len(xs) < 2:
            continue
        cache = tmp_path / f"cache-{n}"
        assert compiled_render("t/case.j2", context, cache, site) == jinja2_render("t/case.j2", context, site)


def test_extends_include_and_overrides_follow_jinja2(tmp_path):
    site = site_with(tmp_path, {
        "modulefiles/base.j2": "{% block head %}H{% endblock %}|"
                               "{% for x in xs %}{% include 'modulefiles/item.j2' %}{% endfor %}|{% block foot %}F{% endblock %}\n",
        "modulefiles/item.j2": "({{ x|sh }} of {{ total|sh }})",
        "modulefiles/mid.j2": "{% extends 'modulefiles/base.j2' %}\n{% block head %}M{% endblock %}\n",
        "modulefiles/leaf.j2": "{% extends 'modulefiles/mid.j2' %}\n"
                               "{% block foot %}L{% block deeper %}D{% endblock %}{% endblock %}\n"})
    context = {"xs": ["a", "b"], "total": 2}
    for name in ("modulefiles/base.j2", "modulefiles/mid.j2", "modulefiles/leaf.j2"):
        assert compiled_render(name, context, tmp_path / "cache", site) == jinja2_render(name, context, site)


def test_site_template_extending_the_builtin_one_compiles(tmp_path):
    site = site_with(tmp_path, {"modulefiles/env.lua.j2": '{% extends "builtin/modulefiles/env.lua.j2" %}\n'
                                                          '{% block footer %}\n-- site: {{ name|lua }}\n{% endblock %}\n'})
    record = make_record(tmp_path)
    text = render_modulefile(record, "lmod", site, tmp_path / "cache")
    assert text == render_modulefile(record, "lmod", site) and "-- site:" in text
    assert cached("modulefiles/env.lua.j2", site, tmp_path / "cache") is not None


UNSUPPORTED = {
    "set": "{% set y = 1 %}{{ y|sh }}",
    "loop variable": "{% for x in xs %}{{ loop.index|sh }}{% endfor %}",
    "call": "{{ xs.count('a')|sh }}",
    "test": "{% if xs is defined %}{{ 'x'|sh }}{% endif %}",
    "macro": "{% macro m() %}m{% endmacro %}{{ m()|sh }}",
    "filter argument": "{{ xs|first|sh }}",
    "super": "{% extends 'base.j2' %}{% block b %}[{{ super()|sh }}]{% endblock %}",
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_outside_the_subset_jinja2_renders_every_time(tmp_path, case):
    site = site_with(tmp_path, {"case.j2": UNSUPPORTED[case], "base.j2": "{% block b %}{{ name|sh }}{% endblock %}"})
    context = {"xs": ["a"], "family": "envmod", "name": "n"}
    cache = tmp_path / "cache"
    for _ in range(2):
        assert render_template("case.j2", context, site, cache) == jinja2_render("case.j2", context, site)
    assert cached("case.j2", site, cache) is None
    assert not list((cache / "templates").glob("py-*"))


def test_a_site_template_added_later_replaces_the_compiled_builtin(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    record, cache = make_record(tmp_path), tmp_path / "cache"
    builtin_text = render_modulefile(record, "tcl", site, cache)
    assert cached("modulefiles/env.tcl.j2", site, cache) is not None
    (site / "modulefiles").mkdir()
    (site / "modulefiles" / "conflict.tcl.j2").write_text("# site guard for {{ name|tcl }}\n")
    assert cached("modulefiles/env.tcl.j2", site, cache) is None    # an included file appeared
    text = render_modulefile(record, "tcl", site, cache)
    assert '# site guard for "myenv"' in text and text != builtin_text


def test_a_failing_render_is_worded_by_jinja2(tmp_path):
    cache = tmp_path / "cache"
    render_template(CONFLICT_TEMPLATES["lmod"], {"family": "envmod", "name": "n"}, None, cache)
    assert cached(CONFLICT_TEMPLATES["lmod"], None, cache) is not None
    with pytest.raises(TemplateFailure, match=r"'family' is undefined \(.*conflict\.lua\.j2, line 3\)"):
        render_template(CONFLICT_TEMPLATES["lmod"], {"name": "n"}, None, cache)


def test_a_damaged_cache_entry_is_made_again(tmp_path):
    cache, context = tmp_path / "cache", {"family": "envmod", "name": "n"}
    expected = render_template(CONFLICT_TEMPLATES["tcl"], context, None, cache)
    (entry,) = (cache / "templates").glob("py-*")
    entry.write_text("def render(:\n")
    assert render_template(CONFLICT_TEMPLATES["tcl"], context, None, cache) == expected
    assert cached(CONFLICT_TEMPLATES["tcl"], None, cache) is not None


def test_a_cache_entry_others_can_write_is_not_run(tmp_path):
    cache, context = tmp_path / "cache", {"family": "envmod", "name": "n"}
    render_template(CONFLICT_TEMPLATES["tcl"], context, None, cache)
    (entry,) = (cache / "templates").glob("py-*")
    entry.chmod(0o664)
    assert cached(CONFLICT_TEMPLATES["tcl"], None, cache) is None
    entry.chmod(0o644)
    assert cached(CONFLICT_TEMPLATES["tcl"], None, cache) is not None


def test_an_edited_builtin_template_is_compiled_again(tmp_path):
    """A copy of the builtin templates stands in for ours, edited after the first render."""
    cache, context = tmp_path / "cache", {"family": "envmod", "name": "n"}
    site = tmp_path / "site"
    (site / "modulefiles").mkdir(parents=True)
    conflict = site / "modulefiles" / "conflict.lua.j2"
    conflict.write_text((builtin_template_dir() / "modulefiles" / "conflict.lua.j2").read_text())
    first = render_template("modulefiles/conflict.lua.j2", context, site, cache)
    conflict.write_text(conflict.read_text() + "-- edited\n")
    assert cached("modulefiles/conflict.lua.j2", site, cache) is None
    assert render_template("modulefiles/conflict.lua.j2", context, site, cache) == first + "-- edited\n"


def test_no_cache_dir_renders_through_jinja2(tmp_path):
    context = {"family": "envmod", "name": "n"}
    assert render_template(CONFLICT_TEMPLATES["lmod"], context) == jinja2_render(CONFLICT_TEMPLATES["lmod"], context)


def test_missing_site_directory_is_a_config_error_before_any_cache(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        render_template(CONFLICT_TEMPLATES["lmod"], {}, tmp_path / "nope", tmp_path / "cache")


def test_a_compiled_modulefile_render_imports_no_jinja2(tmp_path):
    """What makes a create fast: with the cache filled, writing a modulefile leaves Jinja2 out."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_record import make_record\n"
        "from bridge.emit.modulefile import render_modulefile\n"
        "cache = Path(sys.argv[2])\n"
        "for module_type in ('lmod', 'tcl'):\n"
        "    render_modulefile(make_record(cache), module_type, cache_dir=cache)\n"
        "print('jinja2' in sys.modules)\n"
    )
    argv = [sys.executable, "-c", script, str(REPO / "tests" / "unit"), str(tmp_path / "cache")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
    first = subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout.split()
    second = subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout.split()
    assert first == ["True"] and second == ["False"]
