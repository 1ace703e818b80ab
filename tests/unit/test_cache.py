"""bridge.cache: a cache that only ever costs speed, never correctness."""

from __future__ import annotations

import json

from bridge.cache import JsonCache, file_stamp


class Counter:
    def __init__(self, value):
        self.value = value
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.value


def test_second_lookup_of_same_key_does_not_compute(tmp_path):
    cache, compute = JsonCache(tmp_path), Counter({"a": [1, 2]})
    assert cache.get_or_compute("kind", ["k", 1], compute) == {"a": [1, 2]}
    assert cache.get_or_compute("kind", ["k", 1], compute) == {"a": [1, 2]}
    assert compute.calls == 1


def test_cache_survives_a_new_cache_object(tmp_path):
    JsonCache(tmp_path).get_or_compute("kind", ["k"], Counter(42))
    compute = Counter(0)
    assert JsonCache(tmp_path).get_or_compute("kind", ["k"], compute) == 42
    assert compute.calls == 0


def test_tuple_key_matches_its_stored_list_form(tmp_path):
    cache, compute = JsonCache(tmp_path), Counter("v")
    cache.get_or_compute("kind", ("a", ("b", 1)), compute)
    cache.get_or_compute("kind", ("a", ("b", 1)), compute)
    assert compute.calls == 1


def test_different_key_computes_again(tmp_path):
    cache = JsonCache(tmp_path)
    cache.get_or_compute("kind", ["k", 1], Counter("one"))
    assert cache.get_or_compute("kind", ["k", 2], Counter("two")) == "two"


def test_kinds_do_not_share_entries(tmp_path):
    cache = JsonCache(tmp_path)
    cache.get_or_compute("python", ["k"], Counter("py"))
    assert cache.get_or_compute("modules", ["k"], Counter("mod")) == "mod"


def test_no_directory_means_always_compute():
    cache, compute = JsonCache(None), Counter(1)
    cache.get_or_compute("kind", ["k"], compute)
    cache.get_or_compute("kind", ["k"], compute)
    assert compute.calls == 2


def test_corrupt_entry_is_recomputed_and_replaced(tmp_path):
    cache = JsonCache(tmp_path)
    cache.get_or_compute("kind", ["k"], Counter("old"))
    (entry,) = (tmp_path / "kind").glob("*.json")
    entry.write_text("{not json")
    assert cache.get_or_compute("kind", ["k"], Counter("new")) == "new"
    assert json.loads(entry.read_text())["value"] == "new"


def test_entry_that_is_not_an_object_is_recomputed(tmp_path):
    cache = JsonCache(tmp_path)
    cache.get_or_compute("kind", ["k"], Counter("old"))
    (entry,) = (tmp_path / "kind").glob("*.json")
    entry.write_text("[1, 2, 3]")
    assert cache.get_or_compute("kind", ["k"], Counter("new")) == "new"


def test_entry_without_a_value_is_recomputed(tmp_path):
    # "A stale or corrupt entry is simply recomputed": a valid JSON object that lacks
    # "value" (another version's layout, a truncated rewrite) must not raise KeyError.
    cache = JsonCache(tmp_path)
    cache.get_or_compute("kind", ["k"], Counter("old"))
    (entry,) = (tmp_path / "kind").glob("*.json")
    entry.write_text(json.dumps({"key": ["k"]}))
    assert cache.get_or_compute("kind", ["k"], Counter("new")) == "new"


def test_entry_stored_under_another_key_is_not_trusted(tmp_path):
    cache = JsonCache(tmp_path)
    cache.get_or_compute("kind", ["k"], Counter("old"))
    (entry,) = (tmp_path / "kind").glob("*.json")
    entry.write_text(json.dumps({"key": ["other"], "value": "wrong"}))
    assert cache.get_or_compute("kind", ["k"], Counter("right")) == "right"


def test_unwritable_cache_still_returns_the_value(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    assert JsonCache(blocker).get_or_compute("kind", ["k"], Counter(7)) == 7


def test_store_leaves_no_temporary_files(tmp_path):
    cache = JsonCache(tmp_path)
    for i in range(3):
        cache.get_or_compute("kind", ["k", i], Counter(i))
    names = sorted(p.name for p in (tmp_path / "kind").iterdir())
    assert len(names) == 3 and all(n.endswith(".json") and not n.startswith(".tmp-") for n in names)


def test_file_stamp_of_a_missing_file_says_so(tmp_path):
    assert file_stamp(str(tmp_path / "nope")) == [str(tmp_path / "nope"), None]


def test_file_stamp_changes_when_the_content_changes(tmp_path):
    path = tmp_path / "f"
    path.write_text("one")
    before = file_stamp(str(path))
    path.write_text("one two")
    assert file_stamp(str(path)) != before


def test_file_stamp_is_stable_for_an_unchanged_file(tmp_path):
    path = tmp_path / "f"
    path.write_text("same")
    assert file_stamp(str(path)) == file_stamp(str(path))


def test_an_entry_of_the_wrong_shape_is_a_miss_and_is_replaced(tmp_path):
    cache = JsonCache(tmp_path)
    cache.get_or_compute("kind", ["k"], Counter([1, 2]))
    is_dict = lambda value: isinstance(value, dict)      # noqa: E731
    compute = Counter({"a": 1})
    assert cache.get_or_compute("kind", ["k"], compute, valid=is_dict) == {"a": 1}
    assert cache.get_or_compute("kind", ["k"], compute, valid=is_dict) == {"a": 1}
    assert compute.calls == 1


def test_a_store_that_fails_leaves_no_temp_file(tmp_path):
    cache = JsonCache(tmp_path)
    cache.get_or_compute("kind", ["k"], Counter(1))
    (entry,) = (tmp_path / "kind").iterdir()
    entry.unlink()
    entry.mkdir()                      # os.replace onto a directory fails: nothing may be left
    assert cache.get_or_compute("kind", ["k"], Counter(2)) == 2
    assert sorted(p.name for p in (tmp_path / "kind").iterdir()) == [entry.name]


def test_a_value_json_cannot_hold_is_returned_uncached_leaving_no_temp_file(tmp_path):
    cache = JsonCache(tmp_path)
    assert cache.get_or_compute("kind", ["k"], Counter({1, 2})) == {1, 2}      # a set: json.dump fails half-way
    assert list((tmp_path / "kind").iterdir()) == []


def test_an_entry_another_user_wrote_is_a_miss(tmp_path):
    """In a cache_dir others can write, an entry of theirs could say anything (as root: chown)."""
    import os

    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root to give an entry to another user")
    cache = JsonCache(tmp_path)
    cache.get_or_compute("kind", ["k"], Counter("mine"))
    (entry,) = (tmp_path / "kind").iterdir()
    entry.write_text(json.dumps({"key": ["k"], "value": "planted"}))
    os.chown(entry, 4321, -1)
    assert cache.get_or_compute("kind", ["k"], Counter("mine")) == "mine"
