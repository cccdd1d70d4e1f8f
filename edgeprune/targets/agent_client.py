"""HTTP client of ``edgeprune agent``: the wire protocol seen from the workstation.

Standard library only (``http.client``; no proxies: agents sit on the local network), so
the search side never needs the server's packages. :class:`AgentClient` talks to one agent
with timeouts, retries with exponential backoff on connection errors and full queues, and
errors that say which agent failed and why; :mod:`edgeprune.targets.remote` builds the
pool and the Target on top of it.

Wire format: ``POST /measure`` carries the ONNX bytes as the body and a JSON header
``X-Edgeprune-Measure`` with the inline profile (without ``remote``), the measurement
settings, warm-up flag, seed and the bytes' sha256; see :mod:`edgeprune.agent.server`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from edgeprune.errors import OnnxModelError, ProfileError, TargetUnavailableError
from edgeprune.profiles.schema import DeviceProfile, MeasurementSettings
from edgeprune.targets.base import LatencyStats

__all__ = [
    "API_VERSION",
    "MEASURE_HEADER",
    "AgentAuthError",
    "AgentBusyError",
    "AgentClient",
    "AgentError",
    "AgentUnreachableError",
    "ModelRejectedError",
]

log = logging.getLogger("edgeprune.targets.agent_client")

API_VERSION = 1
MEASURE_HEADER = "X-Edgeprune-Measure"
_MAX_BACKOFF_S = 10.0


class AgentError(TargetUnavailableError):
    """An agent that cannot give a figure (base class of the remote target's errors)."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(message)
        self.url = url


class AgentAuthError(AgentError):
    """The agent refused the token (HTTP 401)."""


class AgentUnreachableError(AgentError):
    """No connection, a connection dropped mid-request, or no answer in time."""


class AgentBusyError(AgentError):
    """The agent's queue stayed full through every retry (HTTP 429)."""


class ModelRejectedError(OnnxModelError):
    """The agent refused the model (not ONNX, fails the checker, too large, runtime says no)."""


class _Retryable(Exception):
    def __init__(self, reason: str, *, retry_after_s: float = 0.0, busy: bool = False) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s
        self.busy = busy


@dataclass
class AgentClient:
    """One agent: ``GET /health`` and ``POST /measure`` with timeouts and retries.

    Args:
        url: Base URL, e.g. ``http://orin-nano.local:8765``.
        token: The agent's bearer token.
        timeout_s: Longest wait for an answer (a measurement can take a while).
        retries: Extra attempts after a connection error or a full queue.
        backoff_s: First pause between attempts; doubles each time (capped at 10 s).
        connect_timeout_s: Longest wait to open the connection.
        token_env: Name of the variable the token came from (for error messages).
    """

    url: str
    token: str = field(repr=False)
    timeout_s: float = 300.0
    retries: int = 3
    backoff_s: float = 0.5
    connect_timeout_s: float = 10.0
    token_env: str = "EDGEPRUNE_AGENT_TOKEN"
    _health: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProfileError(
                f"agent URL '{self.url}' must look like http://HOST:PORT (remote.urls)"
            )
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")

    # ---- public ------------------------------------------------------------------------
    def health(self, *, refresh: bool = False) -> dict[str, Any]:
        """The agent's ``/health`` answer (cached after the first call)."""
        if self._health is None or refresh:
            status, body = self._call("GET", "/health")
            if status != 200:
                self._raise_for(status, body)
            if body.get("api_version") != API_VERSION:
                raise AgentError(
                    self.url,
                    f"agent {self.url} speaks API {body.get('api_version')}, this client "
                    f"{API_VERSION}; install the same edgeprune version on both machines",
                )
            self._health = body
        return self._health

    def measure(
        self,
        onnx_bytes: bytes,
        profile: DeviceProfile,
        settings: MeasurementSettings,
        *,
        warmup: bool = True,
        seed: int = 0,
        sha256: str | None = None,
    ) -> tuple[LatencyStats, dict[str, Any]]:
        """Measure ``onnx_bytes`` on the agent with ``profile`` (sent inline, sans ``remote``).

        Returns:
            The stats and the agent's timing facts (``started_unix``, ``finished_unix``,
            ``queued_s``, ``session_cache_hit``, ``warmup``, ``sha256``).

        Raises:
            AgentAuthError, AgentUnreachableError, AgentBusyError, AgentError,
            ModelRejectedError, ProfileError: see the class docs; messages name the agent.
        """
        info = self.health()
        target = info.get("targets", {}).get(profile.runtime, {})
        if not target.get("available", False):
            raise AgentError(
                self.url,
                f"agent {self.url} cannot run {profile.runtime}: "
                f"{target.get('reason') or 'not reported'}; point the profile at a device "
                "that has it",
            )
        limit = int(info.get("limits", {}).get("max_upload_bytes", 0))
        if limit and len(onnx_bytes) > limit:
            raise ModelRejectedError(
                f"agent {self.url} accepts uploads up to {limit / 2**20:g} MiB, the model has "
                f"{len(onnx_bytes) / 2**20:.1f} MiB; restart it with a larger --max-upload-mb"
            )
        meta = {
            "profile": profile.model_dump(mode="json", exclude={"remote"}),
            "settings": settings.model_dump(mode="json"),
            "warmup": warmup,
            "seed": seed,
            "sha256": sha256 or hashlib.sha256(onnx_bytes).hexdigest(),
        }
        headers = {
            "Content-Type": "application/octet-stream",
            MEASURE_HEADER: json.dumps(meta, separators=(",", ":")),
        }
        status, body = self._call("POST", "/measure", onnx_bytes, headers)
        if status != 200:
            self._raise_for(status, body)
        try:
            return LatencyStats.from_dict(body["stats"]), dict(body.get("agent", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise AgentError(self.url, f"agent {self.url} sent a malformed result: {exc}") from exc

    # ---- HTTP --------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        first = ""
        for attempt in range(self.retries + 1):
            try:
                return self._once(method, path, body, headers or {})
            except _Retryable as exc:
                last = str(exc)
                first = first or last
                if attempt == self.retries:
                    # The first failure says what happened (e.g. dropped mid-request), the
                    # last one how things stand now (e.g. refused: the agent is gone).
                    what = last if last == first else f"{first}; then {last}"
                    cls = AgentBusyError if exc.busy else AgentUnreachableError
                    hint = (
                        "add agents to the pool or wait"
                        if exc.busy
                        else "is `edgeprune agent` running there and the URL right?"
                    )
                    raise cls(
                        self.url,
                        f"agent {self.url}: {what} (after {self.retries + 1} attempts); {hint}",
                    ) from None
                pause = min(_MAX_BACKOFF_S, max(exc.retry_after_s, self.backoff_s * 2**attempt))
                log.debug("agent %s: %s; retrying in %.1f s", self.url, last, pause)
                time.sleep(pause)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _once(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.connect_timeout_s)
        try:
            try:
                conn.connect()
            except OSError as exc:  # refused, unreachable, DNS, connect timeout
                raise _Retryable(f"cannot connect ({_reason(exc)})") from exc
            assert conn.sock is not None
            conn.sock.settimeout(self.timeout_s)
            all_headers = {"Authorization": f"Bearer {self.token}", **headers}
            # The agent may answer (401/413) and close before reading the whole body: its
            # answer can still be waiting in the socket, and getresponse() below tells.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.request(method, self._base + path, body=body, headers=all_headers)
            try:
                resp = conn.getresponse()
                raw = resp.read()
            except TimeoutError as exc:
                raise AgentUnreachableError(
                    self.url,
                    f"agent {self.url} gave no answer within {self.timeout_s:g} s; raise "
                    "remote.timeout_s if measurements take longer",
                ) from exc
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                raise _Retryable(
                    f"connection dropped mid-request ({_reason(exc)}); the agent stopped or crashed"
                ) from exc
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = None
        if resp.status in (429, 503):  # 503: uvicorn's connection limit (plain text)
            detail = parsed.get("detail") if isinstance(parsed, dict) else None
            raise _Retryable(
                f"busy (HTTP {resp.status}: {detail or 'too many connections'})",
                retry_after_s=_float(resp.getheader("Retry-After")),
                busy=True,
            )
        if not isinstance(parsed, dict):
            raise AgentError(
                self.url,
                f"{self.url} answered HTTP {resp.status} with something that is not an "
                "edgeprune agent's JSON; check the URL and port",
            )
        return resp.status, parsed

    def _raise_for(self, status: int, body: dict[str, Any]) -> None:
        kind, detail = body.get("error", "?"), body.get("detail") or f"HTTP {status}"
        where = f"agent {self.url}"
        if status == 401:
            raise AgentAuthError(
                self.url,
                f"{where} refused the token ({detail}); set ${self.token_env} to the content "
                "of the agent's --token-file",
            )
        if status == 413 or (status == 400 and kind == "invalid_model"):
            raise ModelRejectedError(f"{where} rejected the model: {detail}")
        if status == 400 and kind == "bad_profile":
            raise ProfileError(f"{where} rejected the profile: {detail}")
        raise AgentError(self.url, f"{where} could not measure (HTTP {status} {kind}): {detail}")


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _float(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
