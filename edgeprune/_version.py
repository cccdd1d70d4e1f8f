"""The package version, at the ground floor: every layer may import it without a cycle."""

__version__ = "0.1.0"
