"""Real upstreams for integration tests: `garrison serve` and llama-cpp-python's own OpenAI server, as subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from garrison.registry import embedded_model_path

THREADS = os.environ.get("GARRISON_TEST_THREADS", "2")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], what: str, deadline_s: float = 120) -> None:
    """Poll `url` until it answers 200, the process dies, or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer {url} within {deadline_s} s")


class Process:
    def __init__(self, cmd: list[str], ready_url: str, what: str, env: dict[str, str] | None = None) -> None:
        self.cmd, self.ready_url, self.what, self.env = cmd, ready_url, what, env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(self.ready_url, self.proc, self.what)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class GarrisonPeer(Process):
    """A second garrison (embedded model and embeddings; auth on unless told) on its own port and home."""

    def __init__(self, home: Path, *, no_auth: bool = False) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "garrison", "serve", *(["--no-auth"] if no_auth else []),
               "--host", "127.0.0.1", "--port", str(self.port), "--home", str(home), "--threads", THREADS,
               "--context-length", "1024", "--max-concurrent", "4"]
        env = {k: v for k, v in os.environ.items() if k != "GARRISON_CONFIG"}
        super().__init__(cmd, f"{self.url}/health", f"garrison on port {self.port}", env)

    @property
    def key(self) -> str:
        return (self.home / "admin.key").read_text().strip()


class LlamaCppServer(Process):
    """llama-cpp-python's OpenAI-compatible server on the embedded GGUF, serving it as `up-model`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        wrapper = Path(__file__).with_name("llama_cpp_server.py")  # the stock server, AMX buffers avoided
        cmd = [sys.executable, str(wrapper), "--model", str(embedded_model_path()),
               "--model_alias", "up-model", "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "1024",
               "--n_threads", THREADS]
        super().__init__(cmd, f"{self.url}/v1/models", "llama_cpp.server")
