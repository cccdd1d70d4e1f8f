"""Start real agents (``python -m edgeprune.agent``) on 127.0.0.1 for tests, and talk raw HTTP."""

from __future__ import annotations

import http.client
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from edgeprune.profiles import MeasurementSettings, load_profile
from edgeprune.targets.agent_client import MEASURE_HEADER

REPO = Path(__file__).resolve().parents[2]
FAST = MeasurementSettings(warmup_iters=2, warmup_ms=0, min_iters=10, min_duration_ms=0)


def require_server_packages() -> None:
    pytest.importorskip("starlette", reason="the agent needs the 'agent' extra (starlette)")
    pytest.importorskip("uvicorn", reason="the agent needs the 'agent' extra (uvicorn)")


def long_settings(duration_ms: float) -> MeasurementSettings:
    """At least ``duration_ms`` of timing, no warm-up: the request stays in flight that long."""
    return MeasurementSettings(
        warmup_iters=0, warmup_ms=0, min_iters=1, min_duration_ms=duration_ms
    )


@dataclass
class AgentProc:
    """A running agent subprocess and what a test needs to reach it."""

    proc: subprocess.Popen[str]
    url: str
    token: str
    tmpdir: Path
    log_path: Path
    _reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        port = urllib.parse.urlsplit(self.url).port
        assert port is not None
        return port

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        token: str | None = "",
    ) -> tuple[int, dict[str, Any]]:
        """Raw HTTP (no client logic): ``token=""`` uses the right token, None sends none."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token or self.token}"
        try:
            conn.request(method, path, body=body, headers=hdrs, encode_chunked=body is not None
                         and not isinstance(body, bytes))  # fmt: skip
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        return resp.status, json.loads(raw) if raw else {}

    def measure_raw(
        self, body: Any, meta: dict[str, Any] | None = None, *, token: str | None = ""
    ) -> tuple[int, dict[str, Any]]:
        meta = meta or {"profile": "cpu-ort-1t", "settings": FAST.model_dump(mode="json")}
        headers = {MEASURE_HEADER: json.dumps(meta), "Content-Type": "application/octet-stream"}
        return self.request("POST", "/measure", body, headers, token=token)

    def health(self) -> dict[str, Any]:
        status, body = self.request("GET", "/health")
        assert status == 200, body
        return body

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """SIGKILL: the agent dies without any chance to answer."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_agent(
    tmp: Path,
    *,
    queue_size: int = 4,
    max_upload_mb: float = 64.0,
    extra: list[str] | None = None,
    startup_s: float = 60.0,
    token: str | None = None,
) -> AgentProc:
    """Start ``python -m edgeprune.agent --port 0`` and wait for its "listening" line
    (``token``: shared by a pool of agents; default a fresh one)."""
    tmp.mkdir(parents=True, exist_ok=True)
    token = token or secrets.token_urlsafe(24)
    token_file = tmp / "token"
    token_file.write_text(token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    agent_tmp = tmp / "agent-tmp"
    agent_tmp.mkdir(exist_ok=True)
    log_path = tmp / "agent.log"
    cmd = [
        sys.executable, "-m", "edgeprune.agent", "--port", "0", "--token-file", str(token_file),
        "--queue-size", str(queue_size), "--max-upload-mb", str(max_upload_mb), *(extra or []),
    ]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(agent_tmp), "OMP_NUM_THREADS": "1"}
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True
        )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        line = lines.get(timeout=startup_s)
    except queue.Empty:
        proc.kill()
        raise AssertionError(f"agent did not start: {log_path.read_text()}") from None
    assert "listening on http://" in line, line
    url = line.strip().rsplit(" ", 1)[-1]
    return AgentProc(proc, url, token, agent_tmp, log_path, reader)


def export_tiny(path: Path, width: int = 8) -> Path:
    """A small exported CNN (TinyConvNet) for the cpu-ort-1t profile."""
    from edgeprune.models.testing import TinyConvNet
    from edgeprune.pipeline.export import export_onnx

    torch.manual_seed(0)
    export_onnx(TinyConvNet(width=width).eval(), load_profile("cpu-ort-1t"), path)
    return path


def agent_files(agent: AgentProc) -> list[Path]:
    """Files left in the agent's own work directory (uploads must not linger there)."""
    workdirs = list(agent.tmpdir.glob("edgeprune-agent-*"))
    assert len(workdirs) == 1, workdirs  # the agent stages uploads in one private directory
    return [p for p in workdirs[0].rglob("*") if p.is_file()]
