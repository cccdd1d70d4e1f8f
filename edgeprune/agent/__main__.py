"""``python -m edgeprune.agent``: run the device agent without the rest of the CLI.

Prints ``edgeprune agent listening on http://HOST:PORT`` on stdout once it accepts
connections (``--port 0`` picks a free port; tests read it from that line).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

from edgeprune.errors import EdgepruneError


def add_agent_arguments(ap: argparse.ArgumentParser) -> None:
    """The agent's options, shared by ``edgeprune agent`` and ``python -m edgeprune.agent``."""
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    ap.add_argument("--port", type=int, default=8765, help="0 = any free port")
    ap.add_argument("--token-file", type=Path, required=True, help="file holding the token")
    ap.add_argument("--max-upload-mb", type=float, default=64.0)
    ap.add_argument("--queue-size", type=int, default=4, help="measurements that may wait")
    ap.add_argument("--session-cache", type=int, default=2, help="warm sessions kept")


def serve_from_args(args: argparse.Namespace) -> int:
    """Serve until stopped; print the URL once connections are accepted."""
    from edgeprune.agent.server import serve

    def ready(host: str, port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        print(f"edgeprune agent listening on http://{shown}:{port}", flush=True)

    # uvicorn re-raises Ctrl-C after its graceful stop
    with contextlib.suppress(KeyboardInterrupt):
        serve(
            args.host,
            args.port,
            args.token_file,
            max_upload_mb=args.max_upload_mb,
            queue_size=args.queue_size,
            session_cache=args.session_cache,
            ready_callback=ready,
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeprune.agent", description=__doc__)
    add_agent_arguments(ap)
    args = ap.parse_args(argv)
    try:
        return serve_from_args(args)
    except EdgepruneError as exc:
        print(f"edgeprune agent: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
