"""Scan: read every ELF file of the env and resolve its libraries as the dynamic loader would, to learn which central modules it really links."""
