"""Tapetum: network detection and response that explains itself."""

__version__ = "0.1.0"
