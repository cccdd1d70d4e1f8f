"""Agent side of a measurement: uploaded ONNX bytes + a profile -> LatencyStats, one at a time.

Nothing here knows about HTTP. :class:`Measurer` holds one lock: validation, session
creation and timing of a request all happen while no other measurement runs, because a
second model compiling or timing on the same CPU/GPU would spoil both figures.

What an upload may contain is narrow on purpose: a serialized ``onnx.ModelProto`` and
nothing else (never a pickle, never code), self-contained (no external-data references,
which could point at files on the device), accepted by ``onnx.checker`` before any runtime
sees it. The bytes go to a private temporary file only for as long as the runtime needs a
path, and that file is removed right after the session is created.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgeprune.errors import (
    EdgepruneError,
    OnnxModelError,
    ProfileError,
    TargetUnavailableError,
)
from edgeprune.profiles import load_profile
from edgeprune.profiles.schema import DeviceProfile, MeasurementSettings
from edgeprune.targets.base import LatencyStats, Prepared, Target, get_target

log = logging.getLogger("edgeprune.agent")


class AgentRequestError(EdgepruneError):
    """A request the agent refuses: HTTP ``status``, a machine-readable ``kind``, a reason."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail


def bad_request(detail: str, kind: str = "bad_request") -> AgentRequestError:
    return AgentRequestError(400, kind, detail)


@dataclass(frozen=True)
class MeasureRequest:
    """What to measure, parsed from the request's JSON header.

    Attributes:
        profile: The profile to measure with, its ``remote`` section removed (the agent
            always measures locally).
        settings: Warm-up and stopping rules (the profile's own when the client sent none).
        warmup: Whether the client asked for a warm-up (forced on for a cold session).
        seed: Seed of the random input.
        sha256: The client's hash of the upload, checked against the bytes received.
    """

    profile: DeviceProfile
    settings: MeasurementSettings
    warmup: bool = True
    seed: int = 0
    sha256: str | None = None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(root)"
    return f"{where}: {err['msg']}"


def parse_measure_request(raw: str | None) -> MeasureRequest:
    """Parse the ``X-Edgeprune-Measure`` header: profile (name or inline), settings, seed.

    Raises:
        AgentRequestError: 400 with the field that does not validate.
    """
    if not raw:
        raise bad_request("missing X-Edgeprune-Measure header (JSON with at least 'profile')")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise bad_request(f"X-Edgeprune-Measure is not JSON: {exc.msg}") from exc
    if not isinstance(meta, dict):
        raise bad_request("X-Edgeprune-Measure must be a JSON object")
    unknown = set(meta) - {"profile", "settings", "warmup", "seed", "sha256"}
    if unknown:
        raise bad_request(f"unknown request fields: {', '.join(sorted(unknown))}")
    spec = meta.get("profile")
    try:
        if isinstance(spec, str):
            profile = _shipped_profile(spec)
        elif isinstance(spec, dict):
            profile = DeviceProfile.model_validate(spec)
        else:
            raise bad_request("'profile' must be a shipped profile name or an inline mapping")
        profile = profile.model_copy(update={"remote": None})
        raw_settings = meta.get("settings")
        settings = (
            profile.measurement
            if raw_settings is None
            else MeasurementSettings.model_validate(raw_settings)
        )
    except ValidationError as exc:
        raise bad_request(
            f"invalid profile or settings: {_first_error(exc)}", "bad_profile"
        ) from exc
    except ProfileError as exc:
        raise bad_request(str(exc), "bad_profile") from exc
    warmup, seed, sha = meta.get("warmup", True), meta.get("seed", 0), meta.get("sha256")
    if not isinstance(warmup, bool) or not isinstance(seed, int) or isinstance(seed, bool):
        raise bad_request("'warmup' must be a boolean and 'seed' an integer")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64):
        raise bad_request("'sha256' must be 64 hex characters")
    return MeasureRequest(profile, settings, warmup, seed, sha)


def _shipped_profile(name: str) -> DeviceProfile:
    # Only names of profiles shipped with the agent: a client must never make the agent
    # read a file of its choosing.
    if (
        not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name)
        or not (resources.files("edgeprune.profiles") / f"{name}.yaml").is_file()
    ):
        raise bad_request(
            f"profile '{name}' is not shipped with this agent; send the profile inline",
            "bad_profile",
        )
    return load_profile(name)


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor stored in a graph: initializers, sparse ones, attributes, subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def check_onnx_bytes(data: bytes) -> Any:
    """Parse ``data`` as an ONNX ModelProto and refuse external-data references.

    The same checks as :func:`edgeprune.pipeline.export.validate_onnx` (parse, non-empty
    graph, ``onnx.checker``) done in memory, without importing torch on the device, plus the
    refusal of external data.

    Returns:
        The parsed ``onnx.ModelProto``.

    Raises:
        AgentRequestError: 400 ``invalid_model`` with the reason.
    """
    import onnx
    from google.protobuf.message import DecodeError

    if not data:
        raise bad_request("empty body: send the ONNX model's bytes", "invalid_model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, ValueError) as exc:
        raise bad_request(
            f"the body is not an ONNX model (protobuf parse failed: {exc}); send the bytes "
            "of a .onnx file",
            "invalid_model",
        ) from exc
    if not proto.HasField("graph") or not proto.graph.node:
        raise bad_request(
            "the body is not an ONNX model (no graph nodes); send the bytes of a .onnx file",
            "invalid_model",
        )
    for tensor in _tensors(proto.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            raise bad_request(
                f"tensor '{tensor.name}' refers to external data; the agent accepts "
                "self-contained models only (save without external data, < 2 GB)",
                "invalid_model",
            )
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx raises ValidationError and friends
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise bad_request(
            f"the ONNX model fails onnx.checker: {first}; export it with `edgeprune export`",
            "invalid_model",
        ) from exc
    return proto


@dataclass(frozen=True)
class MeasureOutcome:
    """One measurement's result and when it ran (agent clock, for overlap checks)."""

    stats: LatencyStats
    sha256: str
    queued_s: float
    started_unix: float
    finished_unix: float
    session_cache_hit: bool
    warmup: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "stats": self.stats.to_dict(),
            "agent": {
                "sha256": self.sha256,
                "queued_s": self.queued_s,
                "started_unix": self.started_unix,
                "finished_unix": self.finished_unix,
                "session_cache_hit": self.session_cache_hit,
                "warmup": self.warmup,
            },
        }


def target_problem(target: Target, profile: DeviceProfile) -> str:
    """Why ``target`` cannot run ``profile`` here ("" when it can)."""
    check = getattr(target, "available_for", None)
    ok, reason = check(profile) if check is not None else target.available()
    return "" if ok else reason


class Measurer:
    """Runs measurements strictly one at a time and keeps a few warm sessions.

    Args:
        workdir: Where uploads are staged (private, emptied after each session is made).
        session_cache: Prepared sessions kept warm, keyed by (model hash, profile). Two
            let an interleaved candidate/baseline comparison (A B A B ...) run its later
            blocks without a warm-up, as it would on a local target.
    """

    def __init__(self, workdir: Path, session_cache: int = 2) -> None:
        self.workdir = Path(workdir)
        self.session_cache = max(0, session_cache)
        self._lock = threading.Lock()
        self._sessions: OrderedDict[tuple[str, str], Prepared] = OrderedDict()
        self._targets: dict[str, Target] = {}
        self.measurements = 0
        self.running = 0
        self.max_running = 0  # stays 1 unless the lock is broken; reported by /health

    def _target(self, runtime: str) -> Target:
        if runtime not in self._targets:
            self._targets[runtime] = get_target(runtime)
        return self._targets[runtime]

    def measure(self, data: bytes, req: MeasureRequest) -> MeasureOutcome:
        """Validate, prepare (or reuse a warm session) and time one upload, exclusively.

        Raises:
            AgentRequestError: 400 for a bad model or profile, 422 when this device cannot
                run the profile, 500 for a runtime failure while timing.
        """
        sha = hashlib.sha256(data).hexdigest()
        if req.sha256 is not None and req.sha256.lower() != sha:
            raise bad_request("upload corrupted: sha256 of the body differs from 'sha256'")
        t_wait = time.monotonic()
        with self._lock:
            queued_s = time.monotonic() - t_wait
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            try:
                return self._measure_locked(data, sha, req, queued_s)
            finally:
                self.running -= 1

    def _measure_locked(
        self, data: bytes, sha: str, req: MeasureRequest, queued_s: float
    ) -> MeasureOutcome:
        started = time.time()
        key = (sha, req.profile.model_dump_json())
        prepared = self._sessions.get(key)
        hit = prepared is not None
        target = self._target(req.profile.runtime)
        if prepared is None:
            prepared = self._prepare(data, target, req.profile)
        else:
            self._sessions.move_to_end(key)
        # A fresh session is cold whatever the client believes: warm it up.
        warmup = req.warmup or not hit
        # Both local targets take warmup/seed keywords beyond the Target protocol.
        measure: Callable[..., LatencyStats] = target.measure
        try:
            stats = measure(prepared, None, req.settings, warmup=warmup, seed=req.seed)
        except EdgepruneError as exc:
            self._drop(key, prepared, hit)
            raise AgentRequestError(422, "measure_failed", str(exc)) from exc
        except Exception as exc:  # a runtime failure is reported, the agent keeps serving
            self._drop(key, prepared, hit)
            log.exception("measurement of %s failed", sha[:12])
            raise AgentRequestError(
                500, "measure_failed", f"{req.profile.runtime} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not hit:
            self._remember(key, prepared)
        self.measurements += 1
        finished = time.time()
        log.info(
            "measured %s on %s: p50 %.3f ms (%d iters, %.2f s, cache %s)",
            sha[:12], req.profile.name, stats.p50_ms, stats.count, finished - started, hit,
        )  # fmt: skip
        return MeasureOutcome(stats, sha, queued_s, started, finished, hit, warmup)

    def _prepare(self, data: bytes, target: Target, profile: DeviceProfile) -> Prepared:
        problem = target_problem(target, profile)
        if problem:
            raise AgentRequestError(
                422, "unsupported", f"this device cannot run profile '{profile.name}': {problem}"
            )
        check_onnx_bytes(data)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".onnx", dir=self.workdir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return target.prepare(path, profile)
        except OnnxModelError as exc:
            raise bad_request(_without_path(str(exc), path), "invalid_model") from exc
        except ProfileError as exc:
            raise bad_request(str(exc), "bad_profile") from exc
        except TargetUnavailableError as exc:
            raise AgentRequestError(422, "unsupported", str(exc)) from exc
        except EdgepruneError as exc:  # e.g. TensorRT's builder rejecting the graph
            raise bad_request(_without_path(str(exc), path), "invalid_model") from exc
        finally:
            # Runtimes hold the model in memory once the session exists.
            path.unlink(missing_ok=True)

    def _remember(self, key: tuple[str, str], prepared: Prepared) -> None:
        if self.session_cache == 0:
            prepared.close()
            return
        self._sessions[key] = prepared
        while len(self._sessions) > self.session_cache:
            _, old = self._sessions.popitem(last=False)
            old.close()

    def _drop(self, key: tuple[str, str], prepared: Prepared, cached: bool) -> None:
        if cached:
            self._sessions.pop(key, None)
        prepared.close()

    def status(self) -> dict[str, Any]:
        """Counters for /health (read without the lock: a snapshot, not a promise)."""
        return {
            "measurements": self.measurements,
            "running": self.running,
            "max_running": self.max_running,
            "warm_sessions": len(self._sessions),
        }

    def close(self) -> None:
        with self._lock:
            while self._sessions:
                _, prepared = self._sessions.popitem()
                prepared.close()


def _without_path(message: str, path: Path) -> str:
    # The staged file's name means nothing to the client; call it what it is.
    return message.replace(str(path), "the uploaded model").replace(path.name, "the upload")
