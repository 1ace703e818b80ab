"""envmod's library: personal Python environments layered on a site's central stack."""

__version__ = "0.1.0"
