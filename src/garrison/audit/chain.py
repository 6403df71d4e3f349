"""The hash chain: each record's SHA-256 covers its fields and the previous hash; an HMAC signs it."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

GENESIS = "0" * 64
"""The prev_hash of the first record."""

CHAINED_FIELDS: tuple[str, ...] = (
    "seq",
    "ts",
    "request_id",
    "key_id",
    "key_name",
    "env",
    "client",
    "method",
    "route",
    "model",
    "decision",
    "reason",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "content_mode",
    "prompt",
    "response",
    "prev_hash",
)
"""Every field of the first schema except `hash` and `mac`, in the order exports print them."""

OPTIONAL_FIELDS: tuple[str, ...] = ("event", "client_request_id", "error_code", "details")
"""Fields added later: chained when set, so records written before them keep their hashes."""


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers: its chained fields as sorted, compact UTF-8 JSON.

    An optional field is covered when it is not NULL; setting or clearing one changes the hash either way.
    """
    fields = {name: record[name] for name in CHAINED_FIELDS}
    fields.update({name: record[name] for name in OPTIONAL_FIELDS if record.get(name) is not None})
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical record (which includes prev_hash, so each hash commits to all before it)."""
    return hashlib.sha256(canonical(record)).hexdigest()


def record_mac(secret: bytes, digest: str) -> str:
    """HMAC-SHA256 of a record hash under the server secret: only the key holder can extend the chain."""
    return hmac.new(secret, digest.encode("ascii"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of checking a chain: fine, or the first bad record and what is wrong with it."""

    ok: bool
    records: int
    head: str
    signatures_checked: bool
    first_bad_seq: int | None = None
    request_id: str | None = None
    problem: str | None = None
    unfinished: tuple[str, ...] = ()  # requests admitted but never finished (a crash, or running now)

    def describe(self) -> str:
        if self.ok:
            signed = "hashes and signatures" if self.signatures_checked else "hashes (signatures not checked)"
            text = f"audit log intact: {self.records} records, {signed} verified; head {self.head}"
            if self.unfinished:
                shown = ", ".join(self.unfinished[:10]) + (" ..." if len(self.unfinished) > 10 else "")
                text += f"; {len(self.unfinished)} requests admitted but never finished: {shown}"
            return text
        where = f"seq {self.first_bad_seq} (request {self.request_id})"
        return f"audit log TAMPERED: first bad record {where}: {self.problem}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_chain(rows: Iterable[Mapping[str, Any]], secret: bytes | None = None) -> Verification:
    """Walk records in seq order and report the first deleted, reordered, altered or re-hashed one."""
    expected, prev, count = 1, GENESIS, 0

    def bad(row: Mapping[str, Any], problem: str) -> Verification:
        return Verification(False, count, prev, secret is not None, row["seq"], row["request_id"], problem)

    for row in rows:
        seq = row["seq"]
        if seq != expected:
            gap = (
                f"record {expected} is missing"
                if seq == expected + 1
                else f"records {expected}..{seq - 1} are missing"
            )
            return bad(
                row,
                f"expected seq {expected}, found {seq}: {gap} (deleted)"
                if seq > expected
                else f"expected seq {expected}, found {seq}: records are out of order",
            )
        if row["prev_hash"] != prev:
            return bad(
                row,
                f"its prev_hash does not match the hash of record {seq - 1}: "
                "a record before it was deleted, replaced or reordered",
            )
        if not hmac.compare_digest(record_hash(row), row["hash"]):
            return bad(row, "its contents do not match its hash: the record was altered")
        if secret is not None and not hmac.compare_digest(record_mac(secret, row["hash"]), row["mac"] or ""):
            return bad(row, "its hash is not signed with this server's secret: the chain was rewritten")
        prev, expected, count = row["hash"], expected + 1, count + 1
    return Verification(True, count, prev, secret is not None)
