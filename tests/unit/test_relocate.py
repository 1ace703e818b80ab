"""bridge.stage.relocate: the image's copy of an env made correct at its node-local path
(``envmod pack``), on real files; the env itself is never touched."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bridge.stage.relocate import relocate_tree


def test_text_files_and_symlinks_naming_the_env_are_rewritten(tmp_path):
    old, new = Path("/shared/root/envs/myenv"), Path("/tmp/envmod-stage/alice/myenv-0123456789ab")
    copy = tmp_path / "copy"
    (copy / "bin").mkdir(parents=True)
    script = copy / "bin/tool"
    script.write_text(f"#!{old}/bin/python\nimport sys\n")
    script.chmod(0o755)
    (copy / "bin/activate").write_text(f'VIRTUAL_ENV="{old}"\nexport VIRTUAL_ENV\n')
    (copy / "pyvenv.cfg").write_text("home = /sw/python/bin\n")
    os.symlink(f"{old}/bin/tool", copy / "bin/alias")
    os.symlink("/sw/python/bin/python3", copy / "bin/python")
    assert relocate_tree(copy, old, new) == []
    assert script.read_text() == f"#!{new}/bin/python\nimport sys\n"
    assert script.stat().st_mode & 0o777 == 0o755
    assert (copy / "bin/activate").read_text().startswith(f'VIRTUAL_ENV="{new}"')
    assert os.readlink(copy / "bin/alias") == f"{new}/bin/tool"
    assert os.readlink(copy / "bin/python") == "/sw/python/bin/python3"      # the central Python's: kept
    assert (copy / "pyvenv.cfg").read_text() == "home = /sw/python/bin\n"


def test_a_binary_naming_the_env_is_reported_not_rewritten(tmp_path):
    old, new = Path("/shared/envs/e"), Path("/tmp/s/e-1")
    copy = tmp_path / "copy"
    copy.mkdir()
    blob = b"\x7fELF\0\0" + str(old).encode() + b"/lib\0"
    (copy / "ext.so").write_bytes(blob)
    assert relocate_tree(copy, old, new) == ["ext.so"]
    assert (copy / "ext.so").read_bytes() == blob


def test_a_shebang_grown_past_the_kernel_limit_starts_through_sh(tmp_path):
    old, new = Path("/s/e"), Path("/tmp/" + "n" * 140 + "/e-1")
    copy = tmp_path / "copy"
    (copy / "bin").mkdir(parents=True)
    script = copy / "bin/tool"
    script.write_text(f"#!{old}/bin/python\nprint('ran')\n")
    script.chmod(0o755)
    relocate_tree(copy, old, new)
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n'''exec' ") and f'"{new}/bin/python"' in text
    # sh execs the named interpreter (absent here): the failure names it, so the line is right
    proc = subprocess.run([str(script)], capture_output=True, text=True)
    assert proc.returncode != 0 and f"{new}/bin/python" in proc.stderr
