"""Real upstreams for integration tests: `garrison serve` and llama-cpp-python's own OpenAI server, as subprocesses."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from garrison.registry import embedded_model_path
from processes import ServerProcess, free_port

THREADS = os.environ.get("GARRISON_TEST_THREADS", "2")


class GarrisonPeer(ServerProcess):
    """A second garrison (embedded model and embeddings; auth on unless told) on its own port and home."""

    def __init__(self, home: Path, *, no_auth: bool = False) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "garrison", "serve", *(["--no-auth"] if no_auth else []),
               "--host", "127.0.0.1", "--port", str(self.port), "--home", str(home), "--threads", THREADS,
               "--context-length", "1024", "--max-concurrent", "4"]
        super().__init__(cmd, f"{self.url}/health", f"garrison on port {self.port}")

    @property
    def key(self) -> str:
        return (self.home / "admin.key").read_text().strip()


class LlamaCppServer(ServerProcess):
    """llama-cpp-python's OpenAI-compatible server on the embedded GGUF, serving it as `up-model`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        wrapper = Path(__file__).with_name("llama_cpp_server.py")  # the stock server, AMX buffers avoided
        cmd = [sys.executable, str(wrapper), "--model", str(embedded_model_path()),
               "--model_alias", "up-model", "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "1024",
               "--n_threads", THREADS]
        super().__init__(cmd, f"{self.url}/v1/models", "llama_cpp.server")
