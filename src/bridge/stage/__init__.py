"""Beside the pipeline: an env packed into one image (``pack``) and staged node-local in a Slurm
job (``stage``), so that no rank of a job imports from the shared file system.

- ``image.py``: the image, its manifest and the fingerprint that tells a stale image.
- ``relocate.py``: the image's copy of the env made correct at its node-local path.
- ``slurm.py``: ``envmod stage``/``unstage`` in a batch script: sbcast, then one step per node.
- ``node.py``: what that step does on each node (mount or unpack, release, sweep what killed jobs left).
"""
