"""Project exceptions. Each one is worded for a person: what is wrong, and what to do.

The CLI prints an :class:`EdgepruneError` as one or two lines and exits with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgepruneError(Exception):
    """A problem with the user's input or environment (never a bug in edgeprune)."""


class ModelError(EdgepruneError):
    """Unknown model, bad factory, or weights that do not fit the architecture."""


class DataError(EdgepruneError):
    """A data path in no supported layout, empty classes, unreadable images."""


class ProfileError(EdgepruneError):
    """A device profile that does not exist or does not validate."""


class ExportError(EdgepruneError):
    """ONNX export failed, or the exported graph disagrees with torch."""


class TargetUnavailableError(EdgepruneError):
    """The runtime a profile needs is not installed or has no device here."""


class OnnxModelError(EdgepruneError):
    """A file that is not a valid ONNX model, or one the runtime rejects."""


class PruningError(EdgepruneError):
    """A pruning plan or model the pruning engine cannot handle."""


class SearchError(EdgepruneError):
    """A compress run that cannot start or continue (bad budget, no data, bad resume dir)."""
