"""bridge.yamltext writes the record without PyYAML: PyYAML must read back exactly what it wrote."""

from __future__ import annotations

import pytest
import yaml

from bridge.yamltext import dump, quoted

try:
    from hypothesis import given, settings, strategies as st
except ImportError:  # pragma: no cover
    given = None

LOADERS = [yaml.SafeLoader] + ([yaml.CSafeLoader] if hasattr(yaml, "CSafeLoader") else [])


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("text", ["", "plain", "yes", "no", "on", "null", "~", "1", "0x1f", "1e3", "- item", "a: b",
                                  "# hash", "'single'", '"double"', "back\\slash", "tab\there", "new\nline",
                                  "\r\n", "\x00\x07\x1b\x7f", "\x85\u2028\u2029", "ü ß 漢字 😀", "\ufeffbom",
                                  "  leading and trailing  ", "{flow}", "[list]", "&anchor *alias !tag %dir @ `"])
def test_every_string_comes_back(text, loader):
    assert yaml.load(f"k: {quoted(text)}\n", Loader=loader) == {"k": text}


@pytest.mark.parametrize("loader", LOADERS)
def test_nested_documents_come_back(loader):
    data = {"envmod_record": 1, "name": "myenv", "on": True, "n": None, "empty_list": [], "empty_map": {},
            "list": ["a", 1, None, False, {"x": "y", "z": [1, 2]}, [], {}, ["nested", ["deeper"]]],
            "map": {"MPICC": "/usr/bin/mpicc", "key with space": "v", "y": "yes", "1": 2, "A\n": None},
            "float": 1.5, "floats": [1e300, 1e-07, -2.5e-10, 3.0, -0.0, float("inf"), float("-inf")]}
    assert yaml.load(dump(data), Loader=loader) == data


def test_only_plain_data_is_written():
    with pytest.raises(TypeError):
        dump({"x": object()})
    with pytest.raises(TypeError):
        dump({1: "x"})


if given is not None:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                             | st.dictionaries(st.text(), inner, max_size=4), max_leaves=20)

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.text(), documents, max_size=5))
    def test_generated_documents_come_back(data):
        for loader in LOADERS:
            assert yaml.load(dump(data), Loader=loader) == data
