"""envmod's Spack extension: ``spack envmod`` (see spack-ext/README.md).

The command lives in ``cmd/envmod.py``; ``spackside.py`` asks Spack for the installed specs and
module names and hands them to envmod's library (``bridge``), which does all the work. Spack
imports this package as ``spack.extensions.envmod``.
"""
