"""The device agent: serves latency measurements over HTTP (``edgeprune agent``).

Start it on the edge device with ``python -m edgeprune.agent --token-file F`` (or
``edgeprune agent``); point a profile's ``remote: {urls: [...]}`` at it. The server needs
the ``agent`` extra (starlette, uvicorn); the client side lives in
:mod:`edgeprune.targets.remote` and needs only the standard library.
"""

from __future__ import annotations

from typing import Any

__all__ = ["serve"]


def serve(*args: Any, **kwargs: Any) -> None:
    """See :func:`edgeprune.agent.server.serve` (imported lazily: starlette is optional)."""
    from edgeprune.agent.server import serve as _serve

    _serve(*args, **kwargs)
