"""Remote target: the Target contract over HTTP, measured by ``edgeprune agent`` on the device.

A profile with ``remote: {urls: [...], token_env: ...}`` measures on the agents it names: the
search and fine-tuning stay on the workstation, the latency comes from the edge box. The
agent runs the same profile without its ``remote`` section on its local runtime.

``prepare`` only reads the ONNX bytes; each ``measure`` sends them in one ``POST /measure``
(models are small, and a request that carries everything survives agent restarts). The
HTTP client (:mod:`edgeprune.targets.agent_client`) uses the standard library only.

Several URLs form an :class:`AgentPool` of devices of the same profile: one request in flight
per device; a calling thread keeps the agent it used last while that one is free (so the
blocks of an interleaved candidate/baseline comparison run on one device, where the sessions
are warm), otherwise it takes the next free agent in round-robin order. An agent that drops
the connection or cannot be reached is reported, set aside for ``revive_s`` and the
measurement goes to another agent of the pool.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import OnnxModelError, ProfileError, TargetUnavailableError
from edgeprune.profiles.schema import DeviceProfile, MeasurementSettings, RemoteSettings
from edgeprune.targets.agent_client import (
    AgentAuthError,
    AgentBusyError,
    AgentClient,
    AgentError,
    AgentUnreachableError,
    ModelRejectedError,
)
from edgeprune.targets.base import LatencyStats, Prepared, register_target

__all__ = [
    "AgentAuthError",
    "AgentBusyError",
    "AgentClient",
    "AgentError",
    "AgentPool",
    "AgentUnreachableError",
    "ModelRejectedError",
    "RemotePrepared",
    "RemoteTarget",
    "pool_for",
]

log = logging.getLogger("edgeprune.remote")


class AgentPool:
    """Agents of one profile: one request in flight per agent, failover on dead agents.

    Args:
        clients: One :class:`AgentClient` per device.
        revive_s: How long an unreachable agent is left out before it is tried again.
    """

    def __init__(self, clients: Sequence[AgentClient], *, revive_s: float = 30.0) -> None:
        if not clients:
            raise ProfileError("remote.urls is empty; name at least one agent URL")
        self.clients = list(clients)
        self.revive_s = revive_s
        self._cond = threading.Condition()
        self._busy: set[str] = set()
        self._down: dict[str, tuple[float, str]] = {}
        self._next = 0
        self._local = threading.local()

    def _usable(self, url: str) -> bool:
        entry = self._down.get(url)
        if entry is not None and time.monotonic() >= entry[0]:
            del self._down[url]  # set aside long enough: give it another chance
            return True
        return entry is None

    def _acquire(self, tried: set[str]) -> AgentClient | None:
        with self._cond:
            while True:
                usable = [c for c in self.clients if c.url not in tried and self._usable(c.url)]
                if not usable:
                    return None
                free = {c.url for c in usable if c.url not in self._busy}
                if free:
                    n = len(self.clients)
                    last = getattr(self._local, "url", None)
                    # This thread's previous agent first, then round robin from the cursor.
                    order = [i for i in range(n) if self.clients[i].url == last] + [
                        (self._next + k) % n for k in range(n)
                    ]
                    idx = next(i for i in order if self.clients[i].url in free)
                    if self.clients[idx].url != last:
                        self._next = (idx + 1) % n
                    pick = self.clients[idx]
                    self._busy.add(pick.url)
                    return pick
                self._cond.wait(timeout=1.0)  # also re-checks revived agents

    def _release(self, client: AgentClient) -> None:
        with self._cond:
            self._busy.discard(client.url)
            self._cond.notify_all()

    def down(self) -> dict[str, str]:
        """Agents now set aside, with the reason."""
        with self._cond:
            return {u: r for u, (until, r) in self._down.items() if time.monotonic() < until}

    def measure(
        self,
        onnx_bytes: bytes,
        profile: DeviceProfile,
        settings: MeasurementSettings,
        *,
        warmup: bool = True,
        seed: int = 0,
        sha256: str | None = None,
    ) -> LatencyStats:
        """Measure on the next free agent; move on to another if that one fails to answer.

        The stats' ``settings`` gain ``agent_url`` and ``agent`` (the agent's timing facts).

        Raises:
            AgentUnreachableError: Every agent of the pool failed (the message lists why).
            AgentBusyError: Every agent's queue stayed full (other clients share them).
            AgentAuthError, ModelRejectedError, ProfileError, AgentError: from the agent
                that measured (not worth retrying elsewhere).
        """
        tried: set[str] = set()
        failures: dict[str, str] = {}
        busy: set[str] = set()
        while True:
            client = self._acquire(tried)
            if client is None:
                reasons = {**self.down(), **failures}
                listed = "; ".join(f"{u}: {r}" for u, r in reasons.items()) or "none usable"
                # Busy everywhere is worth waiting for; anything else needs a person.
                cls = (
                    AgentBusyError if busy and len(busy) == len(reasons) else AgentUnreachableError
                )
                raise cls(
                    ",".join(c.url for c in self.clients),
                    f"no agent of the pool could measure ({listed})",
                )
            tried.add(client.url)
            try:
                stats, meta = client.measure(
                    onnx_bytes, profile, settings, warmup=warmup, seed=seed, sha256=sha256
                )
            except AgentUnreachableError as exc:
                with self._cond:
                    self._down[client.url] = (time.monotonic() + self.revive_s, str(exc))
                failures[client.url] = str(exc)
                log.warning("%s; continuing with the other agents of the pool", exc)
                continue
            except AgentBusyError as exc:
                failures[client.url] = str(exc)
                busy.add(client.url)
                continue
            finally:
                self._release(client)
            self._local.url = client.url
            merged = {**stats.settings, "agent_url": client.url, "agent": meta}
            return LatencyStats(stats.times_ms, merged, stats.metric, stats.block_sizes)


_POOLS: dict[tuple[Any, ...], AgentPool] = {}
_POOLS_LOCK = threading.Lock()


def pool_for(remote: RemoteSettings) -> AgentPool:
    """The process-wide pool of a profile's agents (shared, so one in flight holds globally).

    Raises:
        AgentAuthError: The token variable is unset or empty.
    """
    token = os.environ.get(remote.token_env, "").strip()
    if not token:
        raise AgentAuthError(
            ",".join(remote.urls),
            f"set ${remote.token_env} to the agent's token (the content of its --token-file) "
            "to measure on remote agents",
        )
    key = (remote.urls, remote.token_env, token, remote.timeout_s, remote.retries)
    with _POOLS_LOCK:
        if key not in _POOLS:
            clients = [
                AgentClient(
                    url, token, remote.timeout_s, remote.retries, token_env=remote.token_env
                )
                for url in remote.urls
            ]
            _POOLS[key] = AgentPool(clients)
        return _POOLS[key]


@dataclass
class RemotePrepared:
    """A model staged for remote measurement: its bytes, hash and the pool that measures it."""

    path: Path
    profile: DeviceProfile
    data: bytes = field(repr=False)
    sha256: str
    pool: AgentPool
    input_name: str
    input_shape: tuple[int, ...]

    def run(self, x: np.ndarray) -> np.ndarray:
        raise TargetUnavailableError(
            f"profile '{self.profile.name}' measures latency on remote agents only; run "
            "accuracy checks with a local onnxruntime profile"
        )

    def close(self) -> None:
        self.data = b""


def _input_name(data: bytes) -> str:
    import onnx

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception:  # the agent is the judge of the model and will say why
        return ""
    inits = {i.name for i in proto.graph.initializer}
    return next((i.name for i in proto.graph.input if i.name not in inits), "")


@register_target("remote")
class RemoteTarget:
    """Measures on ``edgeprune agent`` devices named by a profile's ``remote`` section."""

    name = "remote"

    def available(self) -> tuple[bool, str]:
        """Always usable here: the client needs only the standard library."""
        return True, ""

    def available_for(self, profile: DeviceProfile) -> tuple[bool, str]:
        """Whether the token is set and at least one agent answers and has the runtime."""
        if profile.remote is None:
            return False, f"profile '{profile.name}' has no remote section"
        try:
            pool = pool_for(profile.remote)
        except AgentError as exc:
            return False, str(exc)
        reasons = []
        for client in pool.clients:
            try:
                got = client.health(refresh=True).get("targets", {}).get(profile.runtime, {})
            except AgentError as exc:
                reasons.append(str(exc))
                continue
            if got.get("available"):
                return True, ""
            reasons.append(f"agent {client.url} has no {profile.runtime}: {got.get('reason')}")
        return False, "; ".join(reasons)

    def prepare(self, onnx_path: Path, profile: DeviceProfile) -> RemotePrepared:
        """Read the ONNX file for sending; the agent validates it on each measure.

        Raises:
            OnnxModelError: The file is missing.
            ProfileError: The profile has no ``remote`` section.
            AgentAuthError: The token variable is unset.
        """
        if profile.remote is None:
            raise ProfileError(f"profile '{profile.name}' has no remote section (remote.urls)")
        path = Path(onnx_path)
        if not path.is_file():
            raise OnnxModelError(f"{path} does not exist; export one with `edgeprune export`")
        data = path.read_bytes()
        return RemotePrepared(
            path=path,
            profile=profile,
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
            pool=pool_for(profile.remote),
            input_name=_input_name(data),
            input_shape=tuple(profile.full_input_shape),
        )

    def measure(
        self,
        prepared: Prepared,
        inputs: np.ndarray | None,
        settings: MeasurementSettings,
        *,
        warmup: bool = True,
        seed: int = 0,
    ) -> LatencyStats:
        """Measure on a pool agent. ``inputs`` only has its shape checked: input values do
        not change a CNN's latency, so the agent times seeded random data of that shape."""
        if not isinstance(prepared, RemotePrepared):
            raise TypeError(f"RemoteTarget.measure needs a RemotePrepared, got {type(prepared)}")
        if not prepared.data:
            raise OnnxModelError(f"{prepared.path} was closed; prepare it again")
        if inputs is not None and tuple(inputs.shape) != prepared.input_shape:
            raise OnnxModelError(
                f"input of shape {list(inputs.shape)} does not fit profile "
                f"'{prepared.profile.name}' ({list(prepared.input_shape)})"
            )
        return prepared.pool.measure(
            prepared.data,
            prepared.profile,
            settings,
            warmup=warmup,
            seed=seed,
            sha256=prepared.sha256,
        )
