"""The agent as a real subprocess on 127.0.0.1: health, auth, limits, validation, queueing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from edgeprune.agent.server import is_loopback, read_token
from edgeprune.errors import EdgepruneError
from edgeprune.profiles import load_profile
from edgeprune.targets.agent_client import AgentBusyError, AgentClient, ModelRejectedError
from tests.agent.helpers import (
    FAST,
    AgentProc,
    agent_files,
    export_tiny,
    long_settings,
    require_server_packages,
    start_agent,
)

require_server_packages()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProc]:
    proc = start_agent(tmp_path_factory.mktemp("agent"), max_upload_mb=0.25)
    yield proc
    proc.stop()


def test_health_reports_versions_targets_device_and_limits(agent: AgentProc) -> None:
    h = agent.health()
    assert h["status"] == "ok" and h["api_version"] == 1
    assert h["versions"]["onnxruntime"] and h["versions"]["uvicorn"]
    assert h["targets"]["onnxruntime"] == {"available": True, "reason": ""}
    assert h["targets"]["tensorrt"]["available"] in (True, False)
    assert h["targets"]["tensorrt"]["available"] or h["targets"]["tensorrt"]["reason"]
    assert h["device"]["cpu_model"] and h["device"]["logical_cores"] >= 1
    assert "cpu-ort-1t" in h["profiles"]
    assert h["limits"] == {"max_upload_bytes": int(0.25 * 2**20), "queue_size": 4}


def test_missing_and_wrong_token_are_401(agent: AgentProc, tiny_onnx: Path) -> None:
    before = agent.health()["queue"]["measurements"]
    for token in (None, "not-the-token", agent.token + "x"):
        status, body = agent.request("GET", "/health", token=token)
        assert status == 401 and body["error"] == "unauthorized", (token, body)
        status, body = agent.measure_raw(tiny_onnx.read_bytes(), token=token)
        assert status == 401 and body["error"] == "unauthorized"
    status, _ = agent.request("GET", "/no-such-route", token=None)
    assert status == 401  # auth comes before routing: nothing is revealed without the token
    assert agent.health()["queue"]["measurements"] == before


def test_oversize_body_is_413(agent: AgentProc) -> None:
    big = bytes(300 * 1024)  # limit is 256 KiB
    status, body = agent.measure_raw(big)
    assert status == 413 and body["error"] == "too_large"
    assert "--max-upload-mb" in body["detail"]
    # Chunked upload (no Content-Length): counted while streaming, still refused.
    status, body = agent.measure_raw(iter([bytes(64 * 1024)] * 5))
    assert status == 413 and body["error"] == "too_large"
    # The client knows the limit from /health and refuses before sending.
    client = AgentClient(agent.url, agent.token, retries=0)
    with pytest.raises(ModelRejectedError, match="max-upload-mb"):
        client.measure(big, load_profile("cpu-ort-1t"), FAST)


def _model_with_unknown_op() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _model_with_external_data() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1])
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="../../../../etc/passwd")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"this is not an onnx model", "not an ONNX model"),
        (b"", "empty body"),
        (b"\x08\x07", "no graph nodes"),  # a valid protobuf (ir_version=7) but no graph
        (_model_with_unknown_op(), "onnx.checker"),
        (_model_with_external_data(), "external data"),
    ],
)
def test_non_onnx_body_is_400_with_a_reason(agent: AgentProc, body: bytes, reason: str) -> None:
    status, answer = agent.measure_raw(body)
    assert status == 400, answer
    assert answer["error"] == "invalid_model" and reason in answer["detail"]
    assert agent_files(agent) == []  # nothing staged is left behind


def test_client_reports_the_agents_reason(agent: AgentProc) -> None:
    client = AgentClient(agent.url, agent.token, retries=0)
    with pytest.raises(ModelRejectedError, match=f"agent {agent.url} rejected the model: .*ONNX"):
        client.measure(b"garbage", load_profile("cpu-ort-1t"), FAST)


def test_bad_profile_and_header_are_400(agent: AgentProc, tiny_onnx: Path) -> None:
    data = tiny_onnx.read_bytes()
    cases = [
        ({"profile": "no-such-profile"}, "not shipped"),
        ({"profile": "/etc/passwd"}, "not shipped"),
        ({"profile": {"name": "x", "batch": 0}}, "batch"),
        ({"profile": "cpu-ort-1t", "settings": {"min_iters": 0}}, "min_iters"),
        ({"profile": "cpu-ort-1t", "exec": "rm -rf /"}, "unknown request fields"),
    ]
    for meta, reason in cases:
        status, body = agent.measure_raw(data, meta)
        assert status == 400 and reason in body["detail"], (meta, body)
    status, body = agent.request("POST", "/measure", data, {})
    assert status == 400 and "X-Edgeprune-Measure" in body["detail"]


def test_measure_and_warm_session_reuse(agent: AgentProc, tiny_onnx: Path) -> None:
    client = AgentClient(agent.url, agent.token, retries=0)
    profile = load_profile("cpu-ort-1t")
    data = tiny_onnx.read_bytes()
    # A cold session is warmed up even when the client asks for no warm-up.
    _, meta1 = client.measure(data, profile.model_copy(update={"batch": 1}), FAST, warmup=False)
    assert meta1["warmup"] is True
    stats, meta2 = client.measure(data, profile, FAST, warmup=False)
    assert meta2["session_cache_hit"] is True and meta2["warmup"] is False
    assert stats.count >= FAST.min_iters
    assert stats.settings["runtime"] == "onnxruntime" and stats.settings["profile"] == "cpu-ort-1t"
    assert agent_files(agent) == []  # the staged upload was removed after the session was made


def test_concurrent_requests_are_queued_not_run_at_once(tmp_path: Path, tiny_onnx: Path) -> None:
    agent = start_agent(tmp_path, queue_size=1)
    try:
        client = AgentClient(agent.url, agent.token, retries=0)
        client.health()
        profile, data = load_profile("cpu-ort-1t"), tiny_onnx.read_bytes()
        results: list[object] = []
        gate = threading.Barrier(3)

        def one() -> None:
            gate.wait()
            try:
                results.append(client.measure(data, profile, long_settings(1000))[1])
            except AgentBusyError as exc:
                results.append(exc)

        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        busy = [r for r in results if isinstance(r, AgentBusyError)]
        done = sorted((r for r in results if isinstance(r, dict)), key=lambda m: m["started_unix"])
        assert len(busy) == 1 and "queue full" in str(busy[0])
        assert len(done) == 2
        # The second ran only after the first had finished, and it waited in the queue.
        assert done[1]["started_unix"] >= done[0]["finished_unix"]
        # ... and it had arrived while the first was running (it waited, it was not late)
        arrived = done[1]["started_unix"] - done[1]["queued_s"]
        assert done[1]["queued_s"] > 0 and arrived < done[0]["finished_unix"]
        q = agent.health()["queue"]
        assert q["max_running"] == 1 and q["rejected_busy"] == 1 and q["measurements"] == 2
        agent.stop()  # SIGTERM: a graceful stop removes the agent's work directory
        assert agent.proc.returncode is not None
        assert list(agent.tmpdir.glob("edgeprune-agent-*")) == []
    finally:
        agent.stop()


def test_token_file_rules(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(EdgepruneError, match="does not exist"):
        read_token(missing)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(EdgepruneError, match="is empty"):
        read_token(empty)
    open_file = tmp_path / "open"
    open_file.write_text("a-long-enough-token-0123456789\n")
    open_file.chmod(0o644)
    with pytest.raises(EdgepruneError, match="chmod 600"):
        read_token(open_file)
    open_file.chmod(0o600)
    assert read_token(open_file) == "a-long-enough-token-0123456789"


def test_agent_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "edgeprune.agent", "--token-file", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "token file" in done.stderr and "does not exist" in done.stderr


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20")


def test_close_to_a_local_measurement(agent: AgentProc, tiny_onnx: Path) -> None:
    from edgeprune.targets.onnxruntime import OrtTarget

    profile = load_profile("cpu-ort-1t")
    settings = FAST.model_copy(update={"min_iters": 100, "min_duration_ms": 300})
    client = AgentClient(agent.url, agent.token, retries=0)
    local = OrtTarget()
    prepared = local.prepare(tiny_onnx, profile)
    remote_p50, local_p50 = [], []
    try:
        for _ in range(3):  # interleaved, so a burst of load on the machine hits both
            remote = client.measure(tiny_onnx.read_bytes(), profile, settings)[0]
            remote_p50.append(remote.p50_ms)
            local_stats = local.measure(prepared, None, settings)
            local_p50.append(local_stats.p50_ms)
    finally:
        prepared.close()
    # Same runtime, same settings: the agent runs what a local measurement runs ...
    for key in ("intra_op_threads", "inter_op_threads", "graph_optimization", "allow_spinning"):
        assert remote.settings.get(key) == local_stats.settings.get(key), key
    # ... and the figures agree, loosely: a process on a shared 2-core box can be slowed
    # 2x by a neighbour; a wrong setting (threads, optimisation level) shows as far more.
    ratio = min(remote_p50) / min(local_p50)
    assert 1 / 3 < ratio < 3.0, (remote_p50, local_p50)
