"""Spack: read Spack's module index and install database without running Spack, and choose a stack from it."""
