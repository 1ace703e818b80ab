"""FAKE rattler workers, for the failures of py-rattler's exit crash that a test cannot cause on
demand. Each does the real worker's real work (rattler_worker.py, loaded by its path) and then ends
the way the test names:

- ``exit-normally``: returns to the interpreter, so rattler's own teardown runs (the REAL crash
  hazard: a SIGSEGV or SIGABRT in some of the runs, not in all);
- ``segv-after`` / ``abort-after``: writes its result, then dies of SIGSEGV / SIGABRT (the crash,
  for certain);
- ``abort-before``: dies of SIGABRT before doing anything (a worker that never gave a result).

usage: python rattler_fake_worker.py MODE   (the request on stdin, as for the real worker)
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

WORKER = Path(__file__).resolve().parents[2] / "src/bridge/build/backends/rattler_worker.py"


def main(mode: str) -> None:
    if mode == "abort-before":
        os.kill(os.getpid(), signal.SIGABRT)
    runpy.run_path(str(WORKER))["main"]()       # not as __main__: main() only, no os._exit
    sys.stdout.flush()
    if mode == "segv-after":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif mode == "abort-after":
        os.kill(os.getpid(), signal.SIGABRT)


if __name__ == "__main__":
    main(sys.argv[1])
