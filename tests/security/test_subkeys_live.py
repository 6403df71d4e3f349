"""Key digests and audit MACs use separate sub-keys of the server secret; stores from before keep working."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from garrison.audit import AuditEvent
from garrison.audit.chain import record_mac
from garrison.security import connect
from garrison.security.keys import load_server_secret
from garrison.settings import Settings
from garrison.subkeys import AUDIT_MACS, KEY_DIGESTS, derive


def _hmac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


@pytest.mark.model
def test_a_key_from_before_sub_keys_still_works_and_is_upgraded(live_server) -> None:
    security = live_server.app.state.security
    secret = load_server_secret(live_server.settings.home / "server.secret")
    issued = security.keys.create(name="old-install", env="dev", scopes=["chat"])
    new_digest = _hmac(derive(secret, KEY_DIGESTS), issued.token)
    assert security.store.fetchone("SELECT 1 FROM api_key_secrets WHERE digest = ?", (new_digest,))
    assert new_digest != _hmac(secret, issued.token)  # not the secret itself, nor the audit sub-key
    assert new_digest != _hmac(derive(secret, AUDIT_MACS), issued.token)
    # Make it a pre-sub-key digest, as an existing store holds them.
    security.store.execute("UPDATE api_key_secrets SET digest = ? WHERE digest = ?",
                           (_hmac(secret, issued.token), new_digest))
    response = httpx.get(f"{live_server.openai_base}/models", timeout=30,
                         headers={"Authorization": f"Bearer {issued.token}"})
    assert response.status_code == 200, response.text
    assert security.store.fetchone("SELECT 1 FROM api_key_secrets WHERE digest = ?", (new_digest,))
    records = security.audit.query(key_id=issued.record.id)
    assert records[-1]["mac"] == "v2:" + record_mac(derive(secret, AUDIT_MACS), records[-1]["hash"])


def _verify(home: Path) -> subprocess.CompletedProcess[str]:
    env = {"GARRISON_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    return subprocess.run([sys.executable, "-m", "garrison", "audit", "verify"], capture_output=True, text=True,
                          env=env, timeout=120)


def test_an_old_audit_chain_verifies_and_a_downgraded_record_after_the_switch_does_not(tmp_path: Path) -> None:
    home = tmp_path / "home"
    security = connect(Settings(home=home))
    secret = load_server_secret(home / "server.secret")
    for i in range(3):
        security.audit.append(AuditEvent(request_id=f"old{i}", method="GET", route="/v1/models", status=200))
    with security.store.transaction() as conn:  # the records an install before sub-keys wrote
        for seq, digest in conn.execute("SELECT seq, hash FROM audit_log").fetchall():
            conn.execute("UPDATE audit_log SET mac = ? WHERE seq = ?", (record_mac(secret, digest), seq))
    security.audit.append(AuditEvent(request_id="new", method="GET", route="/v1/models", status=200))
    verified = _verify(home)
    assert verified.returncode == 0 and "4 records" in verified.stdout, verified.stderr
    security.audit.append(AuditEvent(request_id="later", method="GET", route="/v1/models", status=200))
    with security.store.transaction() as conn:  # a record after the switch signed the old way
        digest = conn.execute("SELECT hash FROM audit_log WHERE seq = 5").fetchone()[0]
        conn.execute("UPDATE audit_log SET mac = ? WHERE seq = 5", (record_mac(secret, digest),))
    security.close()
    downgraded = _verify(home)
    assert downgraded.returncode == 1 and "seq 5" in downgraded.stderr
