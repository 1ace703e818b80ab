"""Discover: the module system in use, the central stack it has loaded, and the central Python."""
