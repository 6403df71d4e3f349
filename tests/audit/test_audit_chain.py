"""The hash chain: `audit verify` passes an intact log and names the first altered, deleted or moved row."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from garrison.audit import AuditEvent, AuditLog, verify_chain
from garrison.audit.chain import CHAINED_FIELDS, GENESIS, record_hash
from garrison.audit.export import export
from garrison.cli.security import register
from garrison.security import Security, connect
from garrison.settings import Settings

N = 6


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def security(home: Path) -> Iterator[Security]:
    sec = connect(Settings(home=home))
    for i in range(1, N + 1):
        sec.audit.append(
            AuditEvent(
                request_id=f"req-{i}",
                method="POST",
                route="/v1/chat/completions",
                status=200 if i % 3 else 403,
                decision="allow" if i % 3 else "deny",
                key_id="k1",
                key_name="alice",
                model="tiny",
                prompt_tokens=i,
                completion_tokens=2 * i,
                latency_ms=1.5 * i,
            )
        )
    yield sec
    sec.close()


def _verify_cli(home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setenv("GARRISON_HOME", str(home))
    monkeypatch.delenv("GARRISON_CONFIG", raising=False)
    monkeypatch.chdir(home)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Root."""

    register(app)
    result = CliRunner().invoke(app, ["audit", "verify"])
    return result.exit_code, result.output


def test_records_chain_to_each_other(security: Security) -> None:
    records = security.audit.query(limit=None)
    assert [r["seq"] for r in records] == list(range(1, N + 1))
    assert records[0]["prev_hash"] == GENESIS
    for prev, record in zip(records, records[1:], strict=False):
        assert record["prev_hash"] == prev["hash"]
        assert record_hash(record) == record["hash"]
    result = security.audit.verify()
    assert result.ok and result.records == N and result.head == records[-1]["hash"]
    assert result.signatures_checked


def test_intact_log_verifies_from_the_cli(
    security: Security, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = _verify_cli(home, monkeypatch)
    assert code == 0
    assert f"audit log intact: {N} records" in output


def test_altered_record_is_named(security: Security, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    security.store.execute("UPDATE audit_log SET status = 200, decision = 'allow' WHERE seq = 3")
    result = security.audit.verify()
    assert not result.ok and result.first_bad_seq == 3 and "altered" in (result.problem or "")
    code, output = _verify_cli(home, monkeypatch)
    assert code == 1
    assert "first bad record seq 3 (request req-3)" in output and "altered" in output


def test_deleted_record_is_named(security: Security, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    security.store.execute("DELETE FROM audit_log WHERE seq = 4")
    result = security.audit.verify()
    assert not result.ok and result.first_bad_seq == 5
    assert "record 4 is missing (deleted)" in (result.problem or "")
    code, output = _verify_cli(home, monkeypatch)
    assert code == 1 and "first bad record seq 5" in output


def test_deleted_first_record_is_named(security: Security) -> None:
    security.store.execute("DELETE FROM audit_log WHERE seq = 1")
    result = security.audit.verify()
    assert not result.ok and result.first_bad_seq == 2 and "missing" in (result.problem or "")


def test_deleted_and_renumbered_record_is_caught_by_the_chain(security: Security) -> None:
    security.store.execute("DELETE FROM audit_log WHERE seq = 2")
    for seq in range(3, N + 1):
        security.store.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (seq - 1, seq))
    result = security.audit.verify()
    assert not result.ok and result.first_bad_seq == 2
    assert "prev_hash does not match" in (result.problem or "")


def test_reordered_records_are_named(security: Security, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # swap records 2 and 5 (a temporary seq keeps the primary key unique)
    security.store.execute("UPDATE audit_log SET seq = -1 WHERE seq = 2")
    security.store.execute("UPDATE audit_log SET seq = 2 WHERE seq = 5")
    security.store.execute("UPDATE audit_log SET seq = 5 WHERE seq = -1")
    result = security.audit.verify()
    assert not result.ok and result.first_bad_seq == 2
    assert "reordered" in (result.problem or "")
    code, output = _verify_cli(home, monkeypatch)
    assert code == 1 and "first bad record seq 2 (request req-5)" in output


def test_a_rehashed_chain_is_caught_by_the_signature(security: Security) -> None:
    """Someone who can edit the database but lacks the server secret cannot rebuild a valid chain."""
    rows = security.audit.query(limit=None)
    rows[2]["status"] = 200
    prev = GENESIS
    for row in rows:
        row["prev_hash"] = prev
        row["hash"] = prev = record_hash(row)
        security.store.execute(
            "UPDATE audit_log SET status = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            (row["status"], row["prev_hash"], row["hash"], row["seq"]),
        )
    assert verify_chain(security.audit.query(limit=None)).ok  # hashes alone are consistent again...
    result = security.audit.verify()
    assert not result.ok and result.first_bad_seq == 3  # ...but the HMAC signatures are not
    assert "not signed with this server's secret" in (result.problem or "")


def test_appends_continue_the_chain_across_processes(security: Security, home: Path) -> None:
    other = connect(Settings(home=home))
    try:
        other.audit.append(AuditEvent(request_id="from-other", method="GET", route="/v1/models", status=200))
    finally:
        other.close()
    security.audit.append(AuditEvent(request_id="back-here", method="GET", route="/v1/models", status=200))
    assert [r["request_id"] for r in security.audit.query(after_seq=N)] == ["from-other", "back-here"]
    assert security.audit.verify().ok


def test_export_jsonl_and_csv_carry_the_chain(security: Security) -> None:
    out = io.StringIO()
    assert export(security.audit.records(), out, "jsonl") == N
    exported = [json.loads(line) for line in out.getvalue().splitlines()]
    assert verify_chain(exported).ok  # an export verifies offline, without the database
    out = io.StringIO()
    assert export(security.audit.records(since=None, until=None, after_seq=4), out, "csv") == N - 4
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["request_id"] for r in rows] == ["req-5", "req-6"]
    assert rows[0]["hash"] == exported[4]["hash"]


def test_unknown_content_mode_is_rejected(security: Security) -> None:
    with pytest.raises(ValueError, match="audit content"):
        AuditLog(security.store, env="dev", secret=None, content="everything")


def test_a_request_admitted_but_never_finished_is_named_by_verify_and_export(security: Security) -> None:
    def record(request_id: str, event: str) -> AuditEvent:
        status = 102 if event == "request.admitted" else 200
        return AuditEvent(request_id=request_id, method="POST", route="/v1/chat/completions", status=status,
                          event=event, client_request_id="theirs-1", details={"finish_reason": "stop"})

    security.audit.append(record("crashed", "request.admitted"))
    security.audit.append(record("ended", "request.admitted"))
    security.audit.append(record("ended", "request.finished"))
    result = security.audit.verify()
    assert result.ok and result.unfinished == ("crashed",)
    assert "1 requests admitted but never finished: crashed" in result.describe()
    out = io.StringIO()
    export(security.audit.records(), out, "jsonl")
    exported = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["request_id"] for r in exported if r["unfinished"]] == ["crashed"]
    assert exported[-1]["client_request_id"] == "theirs-1" and json.loads(exported[-1]["details"]) == {
        "finish_reason": "stop"}
    assert verify_chain(exported).ok


def test_fields_added_later_are_chained_and_records_without_them_keep_their_hashes(security: Security) -> None:
    first_schema = security.audit.query(limit=1)[0]
    legacy = {**first_schema, "event": None, "client_request_id": None, "error_code": None, "details": None}
    old_canonical = {name: legacy[name] for name in CHAINED_FIELDS}
    assert record_hash(legacy) == hashlib.sha256(
        json.dumps(old_canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()  # a record written before the new fields existed verifies as it did
    security.store.execute("UPDATE audit_log SET client_request_id = 'forged' WHERE seq = 2")
    result = security.audit.verify()
    assert not result.ok and result.first_bad_seq == 2
