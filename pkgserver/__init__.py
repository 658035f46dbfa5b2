"""pkgserver: a private Python package index (PEP 503/691 simple API, uploads, search)."""

__version__ = "0.1.0"
