"""The audit log: typed events appended durably to one hash-chained table, queried and verified."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from garrison.audit.chain import GENESIS, Verification, record_hash, record_mac, verify_chain
from garrison.errors import AuditWriteError
from garrison.store import Store
from garrison.store.times import Clock, to_iso

CONTENT_MODES = ("none", "hash", "full")
# Typed events: one `request` record for a request the pipeline never admitted (a denial, a bad body, an
# admin call), and a chained `request.admitted` / `request.finished` pair for every admitted generation.
EVENTS = ("request", "request.admitted", "request.finished")


@dataclass(slots=True)
class AuditEvent:
    """What happened in one request (or at one step of it: admitted, finished)."""

    request_id: str
    method: str
    route: str
    status: int
    decision: str = "allow"
    reason: str | None = None
    key_id: str | None = None
    key_name: str | None = None
    client: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    prompt_text: str | None = None
    response_text: str | None = None
    event: str = "request"
    client_request_id: str | None = None
    error_code: str | None = None
    details: dict[str, Any] | None = None


class AuditLog:
    """The one audit sink: `append` returns only once the record is committed with synchronous=FULL."""

    def __init__(
        self, store: Store, *, env: str, secret: bytes | None, content: str = "none", clock: Clock = time.time
    ) -> None:
        if content not in CONTENT_MODES:
            raise ValueError(f"audit content must be one of {CONTENT_MODES}")
        self.env = env
        self.content = content
        self._store = store
        self._secret = secret
        self._clock = clock
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A durable write transaction for records and whatever must commit with them (usage rows)."""
        try:
            with self._lock, self._store.transaction() as conn:
                yield conn
        except (sqlite3.Error, OSError, RuntimeError) as exc:
            raise AuditWriteError(
                f"the audit record could not be written ({type(exc).__name__}: {exc})"
            ) from exc

    def append(self, event: AuditEvent) -> dict[str, Any]:
        """Chain and commit one record; raises AuditWriteError when it could not be made durable."""
        with self.transaction() as conn:
            last = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
            record = self._record(
                event, seq=last[0] + 1 if last else 1, prev_hash=last[1] if last else GENESIS
            )
            columns = ", ".join(record)
            marks = ", ".join("?" for _ in record)
            conn.execute(f"INSERT INTO audit_log ({columns}) VALUES ({marks})", tuple(record.values()))
        return record

    def query(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        key_id: str | None = None,
        decision: str | None = None,
        after_seq: int = 0,
        limit: int | None = 100,
    ) -> list[dict[str, Any]]:
        """Records in seq order matching the filters (`since` <= ts < `until`), from after `after_seq`."""
        return list(
            self.records(
                since=since, until=until, key_id=key_id, decision=decision, after_seq=after_seq, limit=limit
            )
        )

    def records(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        key_id: str | None = None,
        decision: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream matching records in seq order (for exports of any size)."""
        where: list[str] = ["seq > ?"]
        params: list[Any] = [after_seq]
        for clause, value in (("ts >= ?", since), ("ts < ?", until)):
            if value is not None:
                where.append(clause)
                params.append(to_iso(value))
        for clause, text in (("key_id = ?", key_id), ("decision = ?", decision)):
            if text is not None:
                where.append(clause)
                params.append(text)
        sql = "SELECT * FROM audit_log WHERE " + " AND ".join(where) + " ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        for row in self._store.iterate(sql, params):
            yield dict(row)

    def count(self) -> int:
        """How many records the log holds."""
        row = self._store.fetchone("SELECT COUNT(*) FROM audit_log")
        return int(row[0]) if row else 0

    def verify(self) -> Verification:
        """Recompute the whole chain (and its signatures when the secret is known); name unfinished requests."""
        rows = (dict(r) for r in self._store.iterate("SELECT * FROM audit_log ORDER BY seq"))
        result = verify_chain(rows, self._secret)
        return dataclasses.replace(result, unfinished=tuple(self.unfinished()))

    def unfinished(self) -> list[str]:
        """Request ids admitted but never finished (the server died mid-request, or it is running now)."""
        rows = self._store.fetchall(
            "SELECT a.request_id FROM audit_log a WHERE a.event = 'request.admitted' AND NOT EXISTS "
            "(SELECT 1 FROM audit_log f WHERE f.request_id = a.request_id AND f.event = 'request.finished') "
            "ORDER BY a.seq"
        )
        return [row[0] for row in rows]

    def _record(self, event: AuditEvent, *, seq: int, prev_hash: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            "seq": seq,
            "ts": to_iso(self._clock()),
            "request_id": event.request_id,
            "key_id": event.key_id,
            "key_name": event.key_name,
            "env": self.env,
            "client": event.client,
            "method": event.method,
            "route": event.route,
            "model": event.model,
            "decision": event.decision,
            "reason": event.reason,
            "status": int(event.status),
            "prompt_tokens": int(event.prompt_tokens),
            "completion_tokens": int(event.completion_tokens),
            "latency_ms": round(float(event.latency_ms), 3),
            "content_mode": self.content,
            "prompt": self._content(event.prompt_text),
            "response": self._content(event.response_text),
            "prev_hash": prev_hash,
            "event": event.event,
            "client_request_id": event.client_request_id,
            "error_code": event.error_code,
            "details": json.dumps(event.details, sort_keys=True, separators=(",", ":")) if event.details else None,
        }
        record["hash"] = record_hash(record)
        record["mac"] = record_mac(self._secret, record["hash"]) if self._secret is not None else None
        return record

    def _content(self, text: str | None) -> str | None:
        """Prompt or response text as the `audit.content` setting allows: nothing, its SHA-256, or itself."""
        if text is None or self.content == "none":
            return None
        if self.content == "hash":
            return hashlib.sha256(text.encode("utf-8")).hexdigest()
        return text
