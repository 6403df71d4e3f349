"""`garrison serve` keeps the first admin key out of redirected output, and GARRISON_HOME private (real command)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

SERVE = [sys.executable, "-m", "garrison", "serve", "--port", "0", "--no-default-model", "--no-embeddings"]


def _serve_until_listening(home: Path, stderr: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GARRISON_HOME": str(home), "PYTHONPATH": ":".join(sys.path)}
    env.pop("GARRISON_CONFIG", None)
    return subprocess.Popen([*SERVE, "--home", str(home)], stdout=subprocess.DEVNULL, stderr=stderr, env=env)


def _read_until(read, marker: bytes) -> bytes:  # type: ignore[no-untyped-def]
    seen = b""
    while marker not in seen:
        chunk = read()
        if not chunk:
            break
        seen += chunk
    return seen


def _drain(leader: int) -> None:
    """Read a pseudo-terminal until its other side is gone (EIO) or closed."""
    while True:
        try:
            if not os.read(leader, 4096):
                return
        except OSError:
            return


def test_redirected_output_names_the_file_but_not_the_secret(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    proc = _serve_until_listening(home, subprocess.PIPE)
    try:
        assert proc.stderr is not None
        output = _read_until(lambda: proc.stderr.readline(), b"garrison listening")
    finally:
        proc.terminate()
        proc.communicate(timeout=60)  # reaps it and closes the pipe
    secret = (home / "admin.key").read_text().strip()
    assert secret.startswith("gsk_dev_")
    assert secret.encode() not in output and b"gsk_dev_" + secret.split("_")[2].encode() + b"_" not in output
    assert str(home / "admin.key").encode() in output
    assert os.stat(home).st_mode & 0o777 == 0o700


def test_an_interactive_terminal_is_shown_the_secret_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    leader, follower = pty.openpty()
    proc = _serve_until_listening(home, follower)
    os.close(follower)
    try:
        output = _read_until(lambda: os.read(leader, 4096), b"garrison listening")
    finally:
        proc.terminate()
        _drain(leader)  # its shutdown lines must never block on a terminal nobody reads
        proc.wait(timeout=60)
        os.close(leader)
    secret = (home / "admin.key").read_text().strip()
    assert secret.encode() in output
