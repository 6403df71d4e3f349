"""Run an answer's code against a case's test code in a resource-limited subprocess.

This is a guard against accidents (infinite loops, runaway memory, stray files, leaked secrets), not a
security boundary: the code runs as the current user with network and filesystem access. Run suites
whose `python` checks execute untrusted answers inside a container or VM if that matters.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_LABELS = {"python", "py", "python3", ""}

# The child applies its own limits before running anything: fork-safe (no preexec_fn in a threaded
# parent) and the hard limits cannot be raised again by the code under test.
_BOOTSTRAP = """\
import resource, sys, traceback

def _limit(kind, value):
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        pass

_limit(resource.RLIMIT_CPU, {cpu_seconds})
_limit(resource.RLIMIT_AS, {memory_bytes})
_limit(resource.RLIMIT_FSIZE, {file_bytes})
_limit(resource.RLIMIT_NOFILE, 64)
_limit(resource.RLIMIT_CORE, 0)


def _run(filename, namespace):
    with open(filename, encoding="utf-8") as handle:
        source = handle.read()
    exec(compile(source, filename, "exec"), namespace)


def _what(exc):
    text = str(exc)
    return f"{{type(exc).__name__}}: {{text}}" if text else type(exc).__name__


def _where(exc, filename):
    lines = [f.line for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    return f" at `{{lines[-1]}}`" if lines and lines[-1] else ""


namespace = {{"__name__": "solution", "__builtins__": __builtins__}}
try:
    _run("solution.py", namespace)
except BaseException as exc:
    sys.stderr.write(f"\\nthe answer's code raised {{_what(exc)}}{{_where(exc, 'solution.py')}}\\n")
    sys.exit(3)
namespace["__name__"] = "__check__"
try:
    _run("check.py", namespace)
except BaseException as exc:
    sys.stderr.write(f"\\ntest failed: {{_what(exc)}}{{_where(exc, 'check.py')}}\\n")
    sys.exit(4)
sys.stdout.write("\\n{sentinel}\\n")
sys.stdout.flush()
"""


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """The outcome of one sandboxed check: pass/fail and a one-line reason."""

    passed: bool
    reason: str


def extract_code(answer: str) -> str:
    """The code in an answer: its first Python (or unlabelled) fenced block, else the raw answer."""
    for match in _FENCE.finditer(answer):
        if match.group(1).lower() in _PYTHON_LABELS:
            return match.group(2).strip("\n")
    return answer.strip()


def _tail(path: Path, limit: int = 400) -> str:
    """The last meaningful line of a captured stream, shortened for a verdict's reason."""
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    if not text:
        return ""
    last = text.splitlines()[-1].strip()
    return last if len(last) <= limit else last[: limit - 1] + "…"


def run_python_check(
    code: str, test: str, *, timeout: float = 5.0, memory_mb: int = 512, file_mb: int = 16
) -> SandboxResult:
    """Run `code` and then `test` in one namespace in an isolated, limited interpreter; pass on clean exit."""
    sentinel = f"garrison-check-passed-{secrets.token_hex(8)}"
    with tempfile.TemporaryDirectory(prefix="garrison-eval-") as tmp:
        root = Path(tmp)
        (root / "solution.py").write_text(code, encoding="utf-8")
        (root / "check.py").write_text(test, encoding="utf-8")
        (root / "bootstrap.py").write_text(
            _BOOTSTRAP.format(
                cpu_seconds=int(timeout) + 1,
                memory_bytes=memory_mb * 1024 * 1024,
                file_bytes=file_mb * 1024 * 1024,
                sentinel=sentinel,
            ),
            encoding="utf-8",
        )
        env = {"PATH": os.defpath, "HOME": tmp, "TMPDIR": tmp, "LC_ALL": "C.UTF-8"}
        with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", "bootstrap.py"],
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            try:
                status = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return SandboxResult(False, f"timed out after {timeout:g}s")
            finally:
                _kill_group(proc)
        stdout = (root / "stdout").read_text(encoding="utf-8", errors="replace")
        if status == 0 and sentinel in stdout:
            return SandboxResult(True, "the test code ran without error")
        if status == 0:
            return SandboxResult(False, "the answer's code exited before the test ran")
        if status in (3, 4):
            return SandboxResult(False, _tail(root / "stderr") or f"exit status {status}")
        return SandboxResult(
            False, _describe_signal(status) or f"exit status {status}: {_tail(root / 'stderr')}"
        )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child and anything it left behind (it leads its own session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _describe_signal(returncode: int) -> str | None:
    """A reason for a child killed by a signal (CPU or file-size limit, memory), if it was one."""
    if returncode >= 0:
        return None
    names = {
        signal.SIGXCPU: "CPU time limit exceeded",
        signal.SIGXFSZ: "file size limit exceeded",
        signal.SIGKILL: "killed (memory or time limit)",
        signal.SIGSEGV: "crashed (segmentation fault)",
    }
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        return f"killed by signal {-returncode}"
    return names.get(sig, f"killed by signal {sig.name}")
