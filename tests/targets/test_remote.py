"""The remote target against real agents on 127.0.0.1: contract, errors, pool, failover."""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeprune.errors import OnnxModelError, TargetUnavailableError
from edgeprune.latency.oracle import LatencyOracle
from edgeprune.pipeline.export import export_onnx
from edgeprune.profiles import DeviceProfile, RemoteSettings, load_profile
from edgeprune.targets.agent_client import AgentAuthError, AgentClient, AgentUnreachableError
from edgeprune.targets.base import Target, require_available, target_for
from edgeprune.targets.remote import AgentPool, RemotePrepared, RemoteTarget
from tests.agent.helpers import (
    FAST,
    AgentProc,
    export_tiny,
    long_settings,
    require_server_packages,
    start_agent,
)

require_server_packages()

TOKEN_ENV = "EDGEPRUNE_TEST_AGENT_TOKEN"


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AgentProc]]:
    procs = [start_agent(tmp_path_factory.mktemp(f"agent{i}")) for i in range(2)]
    yield procs
    for p in procs:
        p.stop()


def _remote_profile(*urls: str, retries: int = 1) -> DeviceProfile:
    base = load_profile("cpu-ort-1t")
    remote = RemoteSettings(urls=urls, token_env=TOKEN_ENV, timeout_s=60, retries=retries)
    return base.model_copy(update={"remote": remote, "measurement": FAST})


def _client(agent: AgentProc, retries: int = 1) -> AgentClient:
    return AgentClient(agent.url, agent.token, timeout_s=60, retries=retries, backoff_s=0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_target_contract_over_http(
    agents: list[AgentProc], tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, agents[0].token)
    profile = _remote_profile(agents[0].url)
    target = target_for(profile)
    assert isinstance(target, RemoteTarget) and isinstance(target, Target)
    require_available(target, profile)
    assert target.available_for(profile) == (True, "")
    prepared = target.prepare(tiny_onnx, profile)
    assert isinstance(prepared, RemotePrepared)
    assert prepared.input_name == "input" and prepared.input_shape == (1, 3, 32, 32)
    stats = target.measure(prepared, None, FAST)
    assert stats.count >= FAST.min_iters
    assert stats.settings["agent_url"] == agents[0].url
    assert stats.settings["runtime"] == "onnxruntime" and stats.settings["intra_op_threads"] == 1
    with pytest.raises(TargetUnavailableError, match="remote agents only"):
        prepared.run(None)  # type: ignore[arg-type]
    prepared.close()
    with pytest.raises(OnnxModelError, match="closed"):
        target.measure(prepared, None, FAST)


def test_oracle_measures_and_compares_on_the_agent(
    agents: list[AgentProc], tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, agents[0].token)
    wide = export_tiny(tmp_path / "wide.onnx", width=24)
    oracle = LatencyOracle(_remote_profile(agents[0].url), workdir=tmp_path, export_fn=export_onnx)
    stats = oracle.measure(tiny_onnx)
    assert stats.settings["agent_url"] == agents[0].url
    cmp = oracle.measure_vs_baseline(wide, tiny_onnx, blocks=2)
    assert cmp.ratio > 1.0  # three times the channels is slower on the device too
    assert len(cmp.block_ratios) == 2
    # Later blocks ran on warm agent sessions without a new warm-up.
    assert oracle.measure(tiny_onnx) == stats and oracle.hits == 1


def test_missing_and_wrong_token(
    agents: list[AgentProc], tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = _remote_profile(agents[0].url)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(AgentAuthError, match=f"set \\${TOKEN_ENV}"):
        RemoteTarget().prepare(tiny_onnx, profile)
    assert RemoteTarget().available_for(profile)[0] is False
    monkeypatch.setenv(TOKEN_ENV, "wrong-token-0123456789")
    prepared = RemoteTarget().prepare(tiny_onnx, profile)
    with pytest.raises(AgentAuthError, match=f"refused the token .*{TOKEN_ENV}"):
        RemoteTarget().measure(prepared, None, FAST)


def test_unreachable_agent_is_a_clear_error_after_retries(tiny_onnx: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    client = AgentClient(url, "t" * 20, retries=2, backoff_s=0.1)
    t0 = time.monotonic()
    with pytest.raises(AgentUnreachableError, match=r"cannot connect.*after 3 attempts") as err:
        client.measure(tiny_onnx.read_bytes(), load_profile("cpu-ort-1t"), FAST)
    assert url in str(err.value) and "edgeprune agent" in str(err.value)
    assert time.monotonic() - t0 >= 0.3  # backed off 0.1 + 0.2 s between attempts


def _wait_until_running(agent: AgentProc) -> None:
    """Until the agent runs a measurement (the test's timeout bounds the wait)."""
    while agent.health()["queue"]["running"] != 1:
        time.sleep(0.02)


def test_agent_killed_mid_request_then_the_pool_continues(
    agents: list[AgentProc], tiny_onnx: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    victim = start_agent(tmp_path / "victim")
    data, profile = tiny_onnx.read_bytes(), load_profile("cpu-ort-1t")
    try:
        client = _client(victim)
        client.health()
        errors: list[BaseException] = []

        def measure() -> None:
            try:
                client.measure(data, profile, long_settings(3000))
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=measure)
        t.start()
        _wait_until_running(victim)  # the measurement is running on the victim now
        victim.kill()
        t.join(timeout=30)
        assert len(errors) == 1 and isinstance(errors[0], AgentUnreachableError)
        assert victim.url in str(errors[0]) and "dropped mid-request" in str(errors[0])
        # The pool sets the dead agent aside and measures on the other one.
        pool = AgentPool([_client(victim), _client(agents[1])])
        with caplog.at_level(logging.WARNING, logger="edgeprune.remote"):
            stats = pool.measure(data, profile, FAST)
        assert stats.settings["agent_url"] == agents[1].url
        assert victim.url in pool.down()
        assert any(victim.url in r.getMessage() for r in caplog.records)
        assert pool.measure(data, profile, FAST).settings["agent_url"] == agents[1].url
    finally:
        victim.stop()


def test_pool_fails_over_when_its_agent_dies_mid_measurement(
    agents: list[AgentProc], tiny_onnx: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    victim = start_agent(tmp_path / "victim")
    data, profile = tiny_onnx.read_bytes(), load_profile("cpu-ort-1t")
    try:
        pool = AgentPool([_client(victim), _client(agents[1])])
        for c in pool.clients:
            c.health()
        got: list[object] = []
        t = threading.Thread(
            target=lambda: got.append(pool.measure(data, profile, long_settings(1500)))
        )
        t.start()
        _wait_until_running(victim)  # round robin started on the victim
        with caplog.at_level(logging.WARNING, logger="edgeprune.remote"):
            victim.kill()
            t.join(timeout=30)
        assert len(got) == 1
        assert got[0].settings["agent_url"] == agents[1].url  # type: ignore[attr-defined]
        assert any("dropped mid-request" in r.getMessage() for r in caplog.records)
    finally:
        victim.stop()


def test_pool_spreads_concurrent_measurements_one_in_flight_per_agent(
    agents: list[AgentProc], tiny_onnx: Path
) -> None:
    pool = AgentPool([_client(a) for a in agents])
    data, profile = tiny_onnx.read_bytes(), load_profile("cpu-ort-1t")
    results: list[dict[str, object]] = []
    lock = threading.Lock()

    def one() -> None:
        stats = pool.measure(data, profile, long_settings(600))
        with lock:
            results.append({"url": stats.settings["agent_url"], **stats.settings["agent"]})

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 3
    assert {r["url"] for r in results} == {a.url for a in agents}  # both devices used
    for agent in agents:
        mine = sorted(
            (r for r in results if r["url"] == agent.url), key=lambda r: r["started_unix"]
        )
        for a, b in itertools.pairwise(mine):
            assert b["started_unix"] >= a["finished_unix"]  # one in flight per device
        # The pool never queued a second request on an agent: nothing waited there for a
        # measurement (each takes >= 0.6 s; what is left is parsing, on a loaded host).
        assert all(float(r["queued_s"]) < 0.3 for r in mine)  # type: ignore[arg-type]


def test_a_thread_keeps_its_agent_while_it_is_free(
    agents: list[AgentProc], tiny_onnx: Path
) -> None:
    # Keeps the blocks of an interleaved comparison on one device, with warm sessions.
    pool = AgentPool([_client(a) for a in agents])
    data, profile = tiny_onnx.read_bytes(), load_profile("cpu-ort-1t")
    first = pool.measure(data, profile, FAST)
    again = pool.measure(data, profile, FAST, warmup=False)
    assert again.settings["agent_url"] == first.settings["agent_url"]
    assert again.settings["agent"]["session_cache_hit"] is True
    assert again.settings["agent"]["warmup"] is False
