"""`garrison audit verify --expect-head HASH --min-records N`: truncation is caught against an anchor kept elsewhere
(the real command on a real store, its newest records deleted the way an intruder would)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from garrison.audit import AuditEvent
from garrison.security import connect
from garrison.settings import Settings


def _verify(home: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {"GARRISON_HOME": str(home), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "garrison", "audit", "verify", *flags], capture_output=True,
                          text=True, env={**env, "PYTHONPATH": ":".join(sys.path)}, timeout=120)


def test_an_anchor_detects_truncation_that_the_chain_alone_cannot(tmp_path: Path) -> None:
    home = tmp_path / "home"
    security = connect(Settings(home=home))
    for i in range(5):
        security.audit.append(AuditEvent(request_id=f"r{i}", method="POST", route="/v1/chat/completions", status=200))
    anchor = security.audit.verify()  # what an operator copies to a ticket: head hash and record count
    security.audit.append(AuditEvent(request_id="r5", method="GET", route="/v1/models", status=200))
    ok = _verify(home, "--expect-head", anchor.head, "--min-records", str(anchor.records))
    assert ok.returncode == 0, ok.stderr
    assert "anchor" in ok.stdout and "6 records" in ok.stdout

    with security.store.transaction() as conn:  # an intruder drops the newest records
        conn.execute("DELETE FROM audit_log WHERE seq >= 4")
    security.close()
    assert _verify(home).returncode == 0  # what is left still chains
    truncated = _verify(home, "--expect-head", anchor.head, "--min-records", str(anchor.records))
    assert truncated.returncode == 1
    assert "TRUNCATED" in truncated.stderr and anchor.head[:12] in truncated.stderr
    fewer = _verify(home, "--min-records", "5")
    assert fewer.returncode == 1 and "3 records" in fewer.stderr and "5" in fewer.stderr
    unknown = _verify(home, "--expect-head", "0" * 63 + "1")
    assert unknown.returncode == 1 and "TRUNCATED" in unknown.stderr
    bad = _verify(home, "--expect-head", "nothex")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
