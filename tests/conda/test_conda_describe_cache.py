"""What the site's real conda says of itself (version, channels, solver) is kept in envmod's cache
across creates, and a change to anything that could change conda's answer is seen by the very
next create: a .condarc in any place conda reads, a variable a .condarc names, a CONDA_* variable.
A corrupt, oddly shaped or unreadable entry is a miss, never an error.

A hit is proved by a marker channel written into the stored entry's value (its key untouched):
an engine that returns the marker read the cache instead of running conda."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.build.backends.conda import CondaCliEngine
from bridge.cache import JsonCache
from tests.conda.conda_user import CondaUser
from tests.conda.conftest import CONDA_VERSION, Conda, conda_site

pytestmark = pytest.mark.conda

MARKER = "file:///marker-from-the-cache"


def site_channels() -> list[str]:
    """The channels of the site's .condarc (ci/conda-site.sh)."""
    return [f"file://{conda_site()}/channel", f"file://{conda_site()}/channel/label/mpi-external"]


class Facts:
    """Engines over the site's conda as successive creates make them: one environment, one cache."""

    def __init__(self, conda: Conda, tmp: Path) -> None:
        self.exe = str(conda.exe)
        self.home = tmp / "home"
        self.home.mkdir()
        self.cache_dir = tmp / "cache"
        self.environ = {**conda.environ(), "HOME": str(self.home)}
        self.environ.pop("XDG_CONFIG_HOME", None)

    def engine(self, **extra: str) -> CondaCliEngine:
        return CondaCliEngine(self.exe, None, {**self.environ, **extra}, JsonCache(self.cache_dir))

    def entries(self) -> list[Path]:
        return sorted((self.cache_dir / "conda").glob("*.json"))

    def mark(self) -> None:
        """Put the marker into every stored entry's channels, keys left as they are."""
        assert self.entries(), "nothing was cached"
        for path in self.entries():
            entry = json.loads(path.read_text())
            entry["value"]["config"]["channels"] = [MARKER]
            path.write_text(json.dumps(entry))


@pytest.fixture
def facts(conda: Conda, tmp_path: Path) -> Facts:
    return Facts(conda, tmp_path)


def test_a_warm_engine_answers_from_the_cache_and_a_cold_one_from_conda(facts: Facts) -> None:
    cold = facts.engine()
    assert cold.default_channels() == site_channels()
    described = cold.describe()
    assert (described["tool"], described["version"], described["solver"]) == ("conda", CONDA_VERSION, "classic")
    assert len(facts.entries()) == 1
    facts.mark()
    warm = facts.engine()
    assert warm.default_channels() == [MARKER]          # read from the cache: conda was not run
    assert warm.describe() == described


def condarc(path: Path, channel: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"channels:\n  - {channel}\n")


@pytest.mark.parametrize("place", ["~/.condarc", "~/.conda/condarc.d/site.yml", "~/.config/conda/.condarc",
                                   "$XDG_CONFIG_HOME/conda/condarc", "$CONDARC"])
def test_a_condarc_written_in_any_place_conda_reads_is_seen_by_the_next_engine(facts: Facts, tmp_path: Path,
                                                                                place: str) -> None:
    extra: dict[str, str] = {}
    if place == "$CONDARC":
        target = tmp_path / "elsewhere" / "condarc.yml"
        extra["CONDARC"] = str(target)
    elif place.startswith("$XDG_CONFIG_HOME"):
        extra["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
        target = tmp_path / "xdg" / "conda" / "condarc"
    else:
        target = facts.home / place.removeprefix("~/")
    assert facts.engine(**extra).default_channels() == site_channels()
    facts.mark()
    assert facts.engine(**extra).default_channels() == [MARKER]
    condarc(target, "file:///a-new-channel")
    assert facts.engine(**extra).default_channels() == ["file:///a-new-channel", *site_channels()]


def test_an_edited_condarc_is_seen_by_the_next_engine(facts: Facts) -> None:
    condarc(facts.home / ".condarc", "file:///one")
    assert facts.engine().default_channels()[0] == "file:///one"
    facts.mark()
    condarc(facts.home / ".condarc", "file:///two")      # same size, same inode: the stamp's mtime tells
    assert facts.engine().default_channels() == ["file:///two", *site_channels()]


def test_a_conda_variable_is_seen_by_the_next_engine(facts: Facts) -> None:
    assert facts.engine().default_channels() == site_channels()
    facts.mark()
    assert facts.engine(CONDA_CHANNELS="file:///from-a-variable").default_channels() == [
        "file:///from-a-variable", *site_channels()]
    facts.mark()
    assert facts.engine(CONDA_SOLVER="libmamba").describe()["solver"] == "libmamba"


def test_a_variable_named_in_a_condarc_is_seen_by_the_next_engine(facts: Facts) -> None:
    condarc(facts.home / ".condarc", "file:///channels/${SITE_AREA}")
    assert facts.engine(SITE_AREA="one").default_channels()[0] == "file:///channels/one"
    facts.mark()
    assert facts.engine(SITE_AREA="two").default_channels()[0] == "file:///channels/two"


@pytest.mark.parametrize("damage", ["garbage", "empty", "wrong shape", "no config", "a directory"])
def test_a_damaged_entry_is_a_miss_and_leaves_nothing_behind(facts: Facts, damage: str) -> None:
    facts.engine().describe()
    (path,) = facts.entries()
    entry = json.loads(path.read_text())
    if damage == "garbage":
        path.write_bytes(b"\x00\xff{not json")
    elif damage == "empty":
        path.write_text("")
    elif damage == "wrong shape":
        path.write_text(json.dumps({"key": entry["key"], "value": 5}))
    elif damage == "no config":
        path.write_text(json.dumps({"key": entry["key"], "value": {"version": "1", "config": ["x"]}}))
    else:
        path.unlink()
        path.mkdir()
    engine = facts.engine()
    assert engine.default_channels() == site_channels()
    assert engine.describe()["version"] == CONDA_VERSION
    if damage == "a directory":
        assert path.is_dir()                 # not replaceable: the answer simply is not kept
    else:
        assert json.loads(path.read_text())["value"]["version"] == CONDA_VERSION      # stored afresh
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp-")] == []


def test_an_unusable_cache_directory_only_costs_speed(conda: Conda, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    engine = CondaCliEngine(str(conda.exe), None, {**conda.environ(), "HOME": str(tmp_path)}, JsonCache(blocked))
    assert engine.default_channels() == site_channels()


def test_the_next_create_uses_channels_from_a_changed_condarc_and_conda_variable(channel: Path, conda_pkgs: Path,
                                                                                  tmp_path: Path) -> None:
    """End to end: no channels in envmod's config, so each create takes conda's own; the second
    runs after a ~/.condarc appeared, the third with CONDA_CHANNELS set."""
    user = CondaUser.make(tmp_path, conda_pkgs)
    made = user.envmod("create", "first", "--backend", "conda", "--conda", "envmod-hello", "-q")
    assert made.returncode == 0, made.stderr
    assert user.record("first").conda.channels == site_channels()
    condarc(Path(user.env["HOME"]) / ".condarc", f"file://{channel}")
    made = user.envmod("create", "second", "--backend", "conda", "--conda", "envmod-hello", "-q")
    assert made.returncode == 0, made.stderr
    assert user.record("second").conda.channels == [f"file://{channel}", *site_channels()]
    made = user.envmod("create", "third", "--backend", "conda", "--conda", "envmod-hello", "-q",
                       CONDA_CHANNELS=f"file://{channel}/label/mpi-external")
    assert made.returncode == 0, made.stderr
    assert user.record("third").conda.channels == [f"file://{channel}/label/mpi-external", f"file://{channel}",
                                                   *site_channels()]
