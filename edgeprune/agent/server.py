"""``edgeprune agent``: serves latency measurements of uploaded ONNX models over HTTP.

Runs on the edge device; the search on a workstation sends candidates through
:mod:`edgeprune.targets.remote`. Built on Starlette + uvicorn (the ASGI core of FastAPI,
without FastAPI's extra dependencies, which buy nothing for a raw-bytes endpoint).

API (every request needs ``Authorization: Bearer <token>``; answers are JSON):

- ``GET /health``: versions, targets usable here, device facts, limits, queue state.
- ``POST /measure``: body = the ONNX model's bytes (``application/octet-stream``); header
  ``X-Edgeprune-Measure`` = JSON ``{"profile": name | {...}, "settings": {...} | null,
  "warmup": bool, "seed": int, "sha256": hex}``. Answers ``{"stats": LatencyStats.to_dict(),
  "agent": {...timing...}}``, or ``{"error": kind, "detail": reason}`` with 400 (bad model,
  profile or header), 401 (token), 408 (upload too slow), 413 (upload too large), 422 (this
  device cannot run the profile), 429 (queue full), 500 (runtime failure).

One measurement runs at a time (see :class:`~edgeprune.agent.measure.Measurer`); up to
``queue_size`` more wait, later ones get 429 at once without their body being read.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune._version import __version__
from edgeprune.agent.measure import AgentRequestError, Measurer, parse_measure_request
from edgeprune.errors import EdgepruneError
from edgeprune.targets.agent_client import API_VERSION, MEASURE_HEADER

log = logging.getLogger("edgeprune.agent")

_MB = 1024 * 1024
_INSTALL = "install them with `pip install 'edgeprune[agent]'` (starlette, uvicorn)"


def read_token(token_file: str | Path) -> str:
    """The bearer token from ``token_file`` (stripped).

    Raises:
        EdgepruneError: The file is missing, readable by every user, empty, or not one
            printable ASCII word.
    """
    path = Path(token_file).expanduser()
    make = (
        f"create one: python -c 'import secrets; print(secrets.token_urlsafe(32))' > {path} "
        f"&& chmod 600 {path}"
    )
    if not path.is_file():
        raise EdgepruneError(f"token file {path} does not exist; {make}")
    if os.name == "posix" and path.stat().st_mode & 0o004:
        raise EdgepruneError(f"token file {path} is readable by every user; chmod 600 {path}")
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgepruneError(f"cannot read token file {path}: {exc}; {make}") from exc
    if not token:
        raise EdgepruneError(f"token file {path} is empty; {make}")
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise EdgepruneError(f"token in {path} must be one word of printable ASCII; {make}")
    if len(token) < 16:
        log.warning("the token in %s is short (%d chars); use 32+ random chars", path, len(token))
    return token


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


class _JSON:
    """JSON response helpers: NaN allowed (a cov of 0/0), unknown objects as strings."""

    @staticmethod
    def response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
        from starlette.responses import Response

        body = json.dumps(content, default=str, separators=(",", ":"))
        return Response(body, status, headers=headers, media_type="application/json")

    @staticmethod
    def error(exc: AgentRequestError, headers: dict[str, str] | None = None) -> Any:
        return _JSON.response({"error": exc.kind, "detail": exc.detail}, exc.status, headers)


class _BearerAuth:
    """ASGI middleware: every HTTP request needs the token, compared in constant time."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode("ascii")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if given is None or not hmac.compare_digest(given, self._expected):
            detail = (
                "missing Authorization: Bearer header"
                if given is None
                else "wrong token (Authorization: Bearer <token from the agent's token file>)"
            )
            response = _JSON.error(
                AgentRequestError(401, "unauthorized", detail), {"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


@dataclass
class AgentState:
    """What the handlers share (mutated on the event loop thread only, except the measurer)."""

    measurer: Measurer
    max_upload_bytes: int
    queue_size: int
    body_timeout_s: float = 120.0
    pending: int = 0
    rejected_busy: int = 0
    started_unix: float = 0.0
    _targets: dict[str, Any] | None = None

    def targets(self) -> dict[str, Any]:
        # TensorRT's availability check imports tensorrt (seconds on a Jetson): once only.
        if self._targets is None:
            from edgeprune.targets.base import get_target

            found: dict[str, Any] = {}
            for name in ("onnxruntime", "tensorrt"):
                try:
                    ok, reason = get_target(name).available()
                except EdgepruneError as exc:
                    ok, reason = False, str(exc)
                found[name] = {"available": ok, "reason": reason}
            self._targets = found
        return self._targets


def _device() -> dict[str, Any]:
    from edgeprune.targets.tensorrt import read_power_state
    from edgeprune.targets.timing import host_info

    info = host_info()
    try:  # Jetson and other device-tree boards name themselves here
        model = Path("/proc/device-tree/model").read_text(encoding="utf-8").strip("\x00\n ")
    except OSError:
        model = None
    return {**info, "board": model, "power": read_power_state()}


def _versions() -> dict[str, str | None]:
    import importlib.metadata

    out: dict[str, str | None] = {}
    for dist in ("onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "starlette", "uvicorn"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


async def _read_body(request: Any, state: AgentState) -> bytes:
    import anyio

    limit = state.max_upload_bytes
    buf = bytearray()
    try:
        with anyio.fail_after(state.body_timeout_s):
            async for chunk in request.stream():
                buf.extend(chunk)
                if len(buf) > limit:  # chunked uploads carry no Content-Length
                    raise _too_large(limit)
    except TimeoutError as exc:
        raise AgentRequestError(
            408, "timeout", f"upload not received within {state.body_timeout_s:.0f} s"
        ) from exc
    return bytes(buf)


def _too_large(limit: int) -> AgentRequestError:
    return AgentRequestError(
        413,
        "too_large",
        f"upload larger than this agent's limit of {limit / _MB:g} MiB; start the agent "
        "with a larger --max-upload-mb",
    )


def _content_length(request: Any) -> int:
    raw = request.headers.get("content-length")
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError as exc:
        raise AgentRequestError(400, "bad_request", f"bad Content-Length {raw!r}") from exc


def create_app(state: AgentState, token: str, on_shutdown: Callable[[], None] | None = None) -> Any:
    """The ASGI application: routes + bearer-token middleware around them.

    ``on_shutdown`` runs in the server's lifespan shutdown: uvicorn re-raises SIGTERM/SIGINT
    after a graceful stop, so code after ``serve()`` (a ``finally``) may never run.
    """
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect
    from starlette.routing import Route

    async def health(request: Any) -> Any:
        from edgeprune.profiles import list_profiles

        # Off the event loop: nvpmodel and TensorRT's import can take seconds on a Jetson.
        targets = await asyncio.to_thread(state.targets)
        device = await asyncio.to_thread(_device)
        return _JSON.response(
            {
                "status": "ok",
                "api_version": API_VERSION,
                "edgeprune": __version__,
                "versions": _versions(),
                "targets": targets,
                "device": device,
                "profiles": [p.name for p in list_profiles()],
                "limits": {
                    "max_upload_bytes": state.max_upload_bytes,
                    "queue_size": state.queue_size,
                },
                "queue": {
                    "pending": state.pending,
                    "rejected_busy": state.rejected_busy,
                    **state.measurer.status(),
                },
                "uptime_s": time.time() - state.started_unix,
            }
        )

    async def measure(request: Any) -> Any:
        import anyio

        try:
            if _content_length(request) > state.max_upload_bytes:
                raise _too_large(state.max_upload_bytes)
            req = parse_measure_request(request.headers.get(MEASURE_HEADER))
            if state.pending >= 1 + state.queue_size:
                state.rejected_busy += 1
                raise AgentRequestError(
                    429,
                    "busy",
                    f"queue full ({state.pending} measurements running or waiting); "
                    "retry later or add an agent to the pool",
                )
            state.pending += 1
            try:
                data = await _read_body(request, state)
                outcome = await anyio.to_thread.run_sync(state.measurer.measure, data, req)
            finally:
                state.pending -= 1
        except AgentRequestError as exc:
            headers = {"Retry-After": "1"} if exc.status == 429 else None
            if exc.status in (408, 413):  # body left unread: do not reuse the connection
                headers = {"Connection": "close"}
            return _JSON.error(exc, headers)
        except ClientDisconnect:
            return _JSON.error(AgentRequestError(400, "bad_request", "client disconnected"))
        return _JSON.response(outcome.to_dict())

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        if on_shutdown is not None:
            on_shutdown()

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/measure", measure, methods=["POST"]),
        ],
    )
    return _BearerAuth(app, token)


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        raise EdgepruneError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or --host"
        ) from exc
    return sock


def serve(
    host: str,
    port: int,
    token_file: str | Path,
    *,
    max_upload_mb: float = 64,
    queue_size: int = 4,
    session_cache: int = 2,
    ready_callback: Callable[[str, int], None] | None = None,
) -> None:
    """Run the agent until interrupted (SIGINT/SIGTERM). Blocks.

    Args:
        host: Address to bind; loopback unless told otherwise (anything else is logged as
            a warning: plain HTTP carries the token in clear).
        port: TCP port; 0 picks a free one (reported to ``ready_callback``).
        token_file: File holding the bearer token (not readable by every user).
        max_upload_mb: Largest ONNX upload accepted (413 above).
        queue_size: Measurements that may wait behind the running one (429 above).
        session_cache: Warm sessions kept for follow-up blocks of the same model.
        ready_callback: Called with (host, port) once the socket accepts connections.

    Raises:
        EdgepruneError: Bad token file, missing server packages, port unavailable.
    """
    token = read_token(token_file)
    if max_upload_mb <= 0 or queue_size < 0:
        raise EdgepruneError("--max-upload-mb must be > 0 and --queue-size >= 0")
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise EdgepruneError(f"the agent needs starlette and uvicorn ({exc}); {_INSTALL}") from exc
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not is_loopback(host):
        log.warning(
            "listening on %s, reachable from other machines: anyone holding the token can run "
            "models here, and plain HTTP sends the token in clear - use a trusted network or "
            "an SSH tunnel",
            host,
        )
    sock = _bind(host, port)
    bound_port = int(sock.getsockname()[1])
    workdir = Path(tempfile.mkdtemp(prefix="edgeprune-agent-"))
    measurer = Measurer(workdir, session_cache)
    state = AgentState(measurer, int(max_upload_mb * _MB), queue_size, started_unix=time.time())

    def cleanup() -> None:
        measurer.close()
        shutil.rmtree(workdir, ignore_errors=True)

    config = uvicorn.Config(
        create_app(state, token, cleanup),
        log_config=None,  # keep the host application's logging as it is
        access_log=False,
        server_header=False,
        timeout_keep_alive=5,
        # Beyond the queue, extra connections only cost memory: uvicorn answers them 503.
        limit_concurrency=queue_size + 16,
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            log.info("edgeprune agent %s listening on %s:%d", __version__, host, bound_port)
            if ready_callback is not None:
                ready_callback(host, bound_port)
        await task

    try:
        asyncio.run(run())
    finally:
        sock.close()
        cleanup()
