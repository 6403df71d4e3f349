"""Servers the live tests run as subprocesses: a free loopback port, and a process that is ready once a URL answers.

One helper for every live test that starts `garrison serve`, llama-cpp-python's server or another peer, so each
of them waits, reports a failed start and stops its process the same way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without GARRISON_CONFIG (a test's config must not leak into a child)."""
    env = {k: v for k, v in os.environ.items() if k != "GARRISON_CONFIG"}
    env.update(extra)
    return env


class ServerProcess:
    """`cmd` as a subprocess, started once `ready_url` answers 200 (failed when the process exits first).

    `log`: where its stdout and stderr go (quoted when it fails to start); without one they are discarded.
    `client`: keyword arguments for the readiness probe (`verify=` an SSL context for a TLS server).
    """

    def __init__(self, cmd: list[str], ready_url: str, what: str, env: dict[str, str] | None = None,
                 log: Path | None = None, **client: Any) -> None:
        self.cmd, self.ready_url, self.what, self.log, self.client = cmd, ready_url, what, log, client
        self.env = env if env is not None else clean_env()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, deadline_s: float = 180) -> ServerProcess:
        if self.log is None:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            with self.log.open("wb") as log:  # the child keeps its own copy of the descriptor
                self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:  # polling a process's readiness, not synchronising what a test asserts
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.what} exited with status {self.proc.returncode}{self._tail()}")
            try:
                if httpx.get(self.ready_url, timeout=2, **self.client).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.what} did not answer {self.ready_url} within {deadline_s} s{self._tail()}")

    def _tail(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return ": " + self.log.read_text(errors="replace")[-2000:]

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
