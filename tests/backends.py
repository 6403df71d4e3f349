"""Real shared backends for tests: a throwaway redis-server on a unix socket in a temp dir (no port to race)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from processes import ServerProcess, free_port


class RedisServer:
    """Debian's redis-server, no TCP port, no persistence; `stop`/`start` to take it away mid-test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (make test installs it: apt-get install -y redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--dir", str(self.directory), "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # readiness poll, not synchronisation of what a test asserts
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self.proc.returncode}")
            try:
                client.ping()
                client.close()
                return self
            except redis.RedisError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not answer within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.socket.unlink(missing_ok=True)


class PostgresCluster:
    """A throwaway PostgreSQL cluster (initdb in a temp dir) on a free loopback port, torn down after.

    initdb and postgres refuse to run as root; as root the cluster runs as the `postgres` system user.
    """

    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self.directory = directory
        self.fsync = fsync  # off for tests (speed); on for benchmarks
        self.data = directory / "data"
        self.port = free_port()
        self.user = "garrison"

    def _as_owner(self, *cmd: str) -> list[str]:
        import os

        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *cmd]
        return list(cmd)

    def _tool(self, name: str) -> str:
        import glob

        debian = ":".join(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True))
        found = shutil.which(name) or shutil.which(name, path=f"/usr/local/bin:{debian}")
        if found is None:
            pytest.fail(f"{name} is not installed (PostgreSQL server binaries are needed for the store tests)")
        return found

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def init(self) -> PostgresCluster:
        import os

        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        subprocess.run(
            self._as_owner(self._tool("initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                           "-E", "UTF8", "--no-sync"),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        return self.start()

    def start(self) -> PostgresCluster:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.directory} -c fsync={'on' if self.fsync else 'off'}"
        subprocess.run(
            self._as_owner(self._tool("pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                           str(self.directory / "log"), "-w", "-t", "60", "start"),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        return self

    def stop(self) -> None:
        subprocess.run(
            self._as_owner(self._tool("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"),
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def database(self, name: str) -> str:
        """A fresh database on the cluster; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


class UpstreamThread:
    """The scripted OpenAI upstream on its own event loop in a thread, so subprocess gateways can reach it."""

    def __init__(self) -> None:
        sys.path.insert(0, str(Path(__file__).parent / "engines" / "upstream"))
        from scripted_upstream import ScriptedUpstream

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = ScriptedUpstream()

    def start(self) -> UpstreamThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(timeout=30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()  # its self-pipe sockets too (an unclosed loop is a ResourceWarning, an error here)


def start_gateway(config: Path, home: Path) -> Any:
    """`garrison serve` on a free loopback port with this config and home, no embedded models; started."""
    port = free_port()
    cmd = [sys.executable, "-m", "garrison", "serve", "--config", str(config), "--home", str(home),
           "--host", "127.0.0.1", "--port", str(port), "--no-default-model", "--no-embeddings"]
    gateway = ServerProcess(cmd, f"http://127.0.0.1:{port}/health", f"gateway on port {port}").start()
    gateway.url = f"http://127.0.0.1:{port}"
    return gateway


def chat(url: str, key: str) -> Any:
    """One short chat completion through a gateway (the scripted upstream's model is `remote`)."""
    import httpx

    body = {"model": "remote", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=60)
