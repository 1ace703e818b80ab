"""Emitters: what envmod writes from an environment record (modulefiles; later kernels, scripts)."""
