"""bridge.stage.node's directories on a node's shared local disk (often /tmp): the top is every
user's (sticky, like /tmp), each user's below it must be their own, never a planted link."""

from __future__ import annotations

import os
import stat

import pytest

from bridge.stage.node import NodeError, _own_dir


def test_the_first_stage_makes_a_sticky_top_and_a_private_user_dir(tmp_path):
    user_dir = tmp_path / "envmod-stage" / "alice"
    old = os.umask(0o077)
    try:
        _own_dir(user_dir)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "envmod-stage").stat().st_mode) == 0o1777
    assert user_dir.is_dir() and user_dir.stat().st_uid == os.geteuid()
    _own_dir(user_dir)          # again: it is there and ours


def test_a_link_planted_where_the_user_dir_goes_is_refused(tmp_path):
    top = tmp_path / "envmod-stage"
    top.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, top / "alice")
    with pytest.raises(NodeError, match="not a directory of this user's"):
        _own_dir(top / "alice")
