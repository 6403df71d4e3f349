"""Audit records queued on local disk while the store is unreachable, appended in order once it answers.

One JSON line per record (the event, when it happened, the usage it settles), written and fsynced before
the request is answered, so a queued record is as durable as a committed one. Replay is idempotent: a
record already in the chain (same request id and event) is skipped, so a crash mid-replay never doubles
one. The file is bounded by `max_bytes`; beyond it the request fails closed (AuditWriteError).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from garrison.errors import AuditWriteError

Usage = tuple[str, str, str, int, int]  # key id, model, UTC day, prompt tokens, completion tokens


@dataclasses.dataclass(frozen=True, slots=True)
class Queued:
    event: dict[str, Any]
    at: float
    usage: Usage | None


class AuditSpool:
    """An append-only JSON Lines queue under GARRISON_HOME, private (0600)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.lock = threading.RLock()  # held by writers and by the replay, so order is kept in this process
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    @property
    def pending(self) -> bool:
        return self.size() > 0

    def count(self) -> int:
        return sum(1 for _ in self.entries())

    def put(self, event: Any, at: float, usage: Usage | None = None) -> None:
        """Queue one record durably (fsync) or raise AuditWriteError."""
        line = json.dumps({"event": dataclasses.asdict(event), "at": at, "usage": usage},
                          separators=(",", ":")).encode() + b"\n"
        with self.lock:
            if self.size() + len(line) > self.max_bytes:
                raise AuditWriteError(
                    f"the store is unreachable and the local audit queue is full ({self.max_bytes} bytes)"
                )
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise AuditWriteError(f"the audit record could not be queued on disk ({exc})") from exc

    def entries(self) -> Iterator[Queued]:
        try:
            with self.path.open("rb") as handle:
                for raw in handle:
                    if raw.endswith(b"\n"):  # a torn last line (a crash mid-write) was never acknowledged
                        data = json.loads(raw)
                        usage = tuple(data["usage"]) if data["usage"] is not None else None
                        yield Queued(data["event"], float(data["at"]), usage)
        except FileNotFoundError:
            return

    def clear(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
