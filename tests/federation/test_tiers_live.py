"""Two tiers on loopback: a local garrison (no model of its own) forwards to a central one over mutual TLS.

The central tier serves the real embedded model, a knowledge model over a public and a confidential
collection, and lists the local gateway as a trusted peer (its Ed25519 public key, ceiling confidential).
The local tier lists the central one as `engine = "garrison"`. A confidential user at the local tier gets
an answer citing the confidential document; a public user never sees it; tokens sent straight to the central
tier that are forged, expired, misaddressed or replayed are refused; both audit chains link the two ids;
a client without a certificate does not get past the TLS handshake.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pki import Pair, Pki

from garrison.security import connect
from garrison.security.federation import TokenSigner
from garrison.security.principal import Principal
from garrison.settings import Settings
from processes import ServerProcess, free_port

pytestmark = pytest.mark.model

THREADS = os.environ.get("GARRISON_TEST_THREADS", "2")
CODEWORD = "ZEBRA-4471"
QUESTION = "What is the launch code of Project Nightjar?"
CONFIDENTIAL_DOC = f"""---
title: Project Nightjar
classification: confidential
---
# Project Nightjar

The launch code of Project Nightjar is {CODEWORD}. Project Nightjar launches in March.
"""
PUBLIC_DOC = """---
title: Visitor guide
---
# Visitor guide

Visitors sign in at the front desk. Project Nightjar is the name of a building on the campus.
"""


def _tls(ca: Path, client: Pair | None = None) -> ssl.SSLContext:
    """A client context trusting the test CA, with a client certificate when given."""
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


@dataclass
class Tiers:
    central: str
    local: str
    ca: Path
    client: Pair
    central_settings: Settings
    local_settings: Settings
    local_key: Path  # the local gateway's federation key (the test signs tokens with it, as that gateway)
    local_config: Path
    alice: str  # confidential clearance at the local tier
    alice_id: str
    bob: str  # public clearance
    bob_id: str

    def to_central(self, token: str, method: str = "GET", path: str = "/v1/models", **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.central}{path}", headers={"Authorization": f"Bearer {token}"},
                             verify=_tls(self.ca, self.client), timeout=120, **kw)

    def signer(self, clock: Any = time.time, name: str = "ws-7") -> TokenSigner:
        return TokenSigner.from_pem(self.local_key, name, clock)


def _run(*args: str, home: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GARRISON_CONFIG"}
    if home is not None:
        env["GARRISON_HOME"] = str(home)
    done = subprocess.run([sys.executable, "-m", "garrison", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def tiers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tiers]:
    root = tmp_path_factory.mktemp("tiers")
    pki = Pki(root)
    server, client = pki.server(), pki.client("ws-7")
    central_home, local_home = root / "central", root / "local"
    lobby, vault = root / "lobby", root / "vault"
    for directory in (central_home, local_home, lobby, vault):
        directory.mkdir(mode=0o700)
    (lobby / "visitors.md").write_text(PUBLIC_DOC)
    (vault / "nightjar.md").write_text(CONFIDENTIAL_DOC)

    local_config = local_home / "garrison.toml"
    central_port, local_port = free_port(), free_port()
    local_config.write_text(f"""
default_model = false
[engine]
embeddings = false
[federation]
name = "ws-7"
[[models]]
id = "hq-chat"
engine = "garrison"
upstreams = ["https://127.0.0.1:{central_port}/v1"]
upstream_model = "hq-kb"
audience = "hq"
trust = "confidential"
retries = 0
tls = {{ ca_file = "{pki.ca}", cert_file = "{client.cert}", key_file = "{client.key}" }}
""")
    # the local gateway's key is made by the CLI (0600); its public half goes into the central's peer list
    public_key = _run("federation", "public-key", "--config", str(local_config), "--home", str(local_home)).strip()
    assert (local_home / "federation.key").stat().st_mode & 0o777 == 0o600

    central_config = central_home / "garrison.toml"
    central_config.write_text(f"""
[engine]
threads = {THREADS}
context_length = 2048
[federation]
name = "hq"
[[federation.peers]]
name = "ws-7"
public_key = "{public_key}"
max_clearance = "confidential"
[documents]
sync_interval = 0
[[documents.roots]]
path = "{lobby}"
collection = "lobby"
label = "public"
[[documents.roots]]
path = "{vault}"
collection = "vault"
label = "confidential"
[[knowledge]]
id = "hq-kb"
model = "smollm2-135m-instruct"
collections = ["lobby", "vault"]
k = 2
""")
    central_settings, local_settings = Settings(home=central_home), Settings(home=local_home)
    security = connect(local_settings)  # the local tier's users, before it starts
    try:
        alice = security.keys.create(name="alice", env="dev", scopes=["chat"], models=["hq-chat"],
                                     clearance="confidential")
        bob = security.keys.create(name="bob", env="dev", scopes=["chat"], models=["hq-chat"], clearance="public")
    finally:
        security.close()

    central_url = f"https://127.0.0.1:{central_port}"
    central = ServerProcess(
        [sys.executable, "-m", "garrison", "serve", "--config", str(central_config), "--home", str(central_home),
         "--host", "127.0.0.1", "--port", str(central_port), "--tls-cert", str(server.cert), "--tls-key",
         str(server.key), "--tls-client-ca", str(pki.ca)],
        f"{central_url}/health", "the central gateway", log=root / "central.log", verify=_tls(pki.ca, client),
    )
    local = None
    try:
        central.start(240)
        admin = (central_home / "admin.key").read_text().strip()
        synced = httpx.post(f"{central_url}/v1/documents/sync", headers={"Authorization": f"Bearer {admin}"},
                            verify=_tls(pki.ca, client), timeout=120)
        assert synced.status_code == 200, synced.text
        local_url = f"http://127.0.0.1:{local_port}"
        local = ServerProcess(
            [sys.executable, "-m", "garrison", "serve", "--config", str(local_config), "--home", str(local_home),
             "--host", "127.0.0.1", "--port", str(local_port)],
            f"{local_url}/health", "the local gateway", log=root / "local.log",
        ).start(240)
        yield Tiers(central_url, local_url, pki.ca, client, central_settings, local_settings,
                    local_home / "federation.key", local_config, alice.token, alice.record.id, bob.token, bob.record.id)
    finally:
        if local is not None:
            local.stop()
        central.stop()


def _ask(tiers: Tiers, key: str, *, stream: bool = False) -> httpx.Response:
    body = {"model": "hq-chat", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 24,
            "temperature": 0, "stream": stream}
    return httpx.post(f"{tiers.local}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=180)


def _stream_chunks(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in response.text.splitlines()
            if line.startswith("data:") and line[5:].strip() != "[DONE]"]


def _records(settings: Settings) -> list[dict[str, Any]]:
    security = connect(settings)
    try:
        assert security.audit.verify().ok
        return security.audit.query(limit=None)
    finally:
        security.close()


def _details(record: dict[str, Any], key: str) -> dict[str, Any]:
    return dict(json.loads(record["details"] or "{}").get(key) or {})


def test_a_confidential_user_gets_the_confidential_document_through_the_central_tier(tiers: Tiers) -> None:
    answer = _ask(tiers, tiers.alice)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    cited = {(c["collection"], c["label"], c["title"]) for c in body["citations"]}
    assert ("vault", "confidential", "Project Nightjar") in cited
    assert body["classification"] == "confidential"
    assert body["choices"][0]["message"]["content"]

    streamed = _ask(tiers, tiers.alice, stream=True)
    assert streamed.status_code == 200
    chunks = _stream_chunks(streamed)
    citations = [c for c in chunks if "citations" in c]
    assert len(citations) == 1 and citations[0]["classification"] == "confidential"
    assert "Project Nightjar" in {c["title"] for c in citations[0]["citations"]}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))

    # the two chains link: the local record names the central one, the central one the local request and user
    local_id = answer.headers["x-request-id"]
    local = [r for r in _records(tiers.local_settings) if r["request_id"] == local_id]
    finished = next(r for r in local if r["event"] == "request.finished")
    assert finished["key_id"] == tiers.alice_id and finished["status"] == 200
    linked = _details(finished, "forwarded")
    assert linked["audience"] == "hq" and linked["classification"] == "confidential"
    central_id = linked["central_request_id"]
    central = [r for r in _records(tiers.central_settings) if r["request_id"] == central_id]
    assert {r["event"] for r in central} == {"request.admitted", "request.finished"}
    for record in central:
        assert record["key_id"] == "peer:ws-7" and record["key_name"] == f"{tiers.alice_id}@ws-7"
        assert _details(record, "federation") | {"token_id": "-"} == {
            "peer": "ws-7", "peer_key_id": tiers.alice_id, "peer_env": "dev", "peer_request_id": local_id,
            "token_id": "-",
        }
        assert record["client_request_id"] == local_id  # the local id also travels as X-Request-Id
    central_documents = json.loads(next(r for r in central if r["event"] == "request.finished")["details"])
    assert "vault" in {d["collection"] for d in central_documents["documents"]}


def test_a_public_user_never_receives_the_confidential_document(tiers: Tiers) -> None:
    for stream in (False, True):
        answer = _ask(tiers, tiers.bob, stream=stream)
        assert answer.status_code == 200, answer.text
        assert CODEWORD not in answer.text
        citations = answer.json()["citations"] if not stream else next(
            c["citations"] for c in _stream_chunks(answer) if "citations" in c)
        assert citations and {(c["collection"], c["label"]) for c in citations} == {("lobby", "public")}
    central = [r for r in _records(tiers.central_settings) if r["key_name"] == f"{tiers.bob_id}@ws-7"]
    finished = [r for r in central if r["event"] == "request.finished"]
    assert len(finished) == 2
    for record in finished:
        assert {d["collection"] for d in json.loads(record["details"])["documents"]} == {"lobby"}


def test_the_central_tier_answers_a_peer_with_only_what_its_clearance_may_see(tiers: Tiers) -> None:
    """Straight to the central documents API with a valid token: public clearance finds no confidential chunk,
    and a restricted claim is capped at the peer's ceiling (confidential)."""
    signer = tiers.signer()

    def search(clearance: str) -> set[str]:
        user = Principal("k-direct", "carol", "dev", frozenset({"documents"}), frozenset({"*"}), clearance=clearance)
        token = signer.mint(user, audience="hq", request_id=f"direct-{clearance}")
        found = tiers.to_central(token, "POST", "/v1/documents/search", json={"query": QUESTION, "k": 4})
        assert found.status_code == 200, found.text
        return {h["collection"] for h in found.json()["data"]}

    assert search("public") == {"lobby"}
    assert "vault" in search("restricted")


def test_forged_expired_misaddressed_and_replayed_tokens_are_refused_by_the_central_tier(tiers: Tiers) -> None:
    user = Principal("k-x", "mallory", "dev", frozenset({"chat"}), frozenset({"*"}), clearance="confidential")
    genuine = tiers.signer()
    once = genuine.mint(user, audience="hq", request_id="replay-1")
    assert tiers.to_central(once).status_code == 200
    cases = {
        "peer_token_replayed": once,
        "peer_token_forged": TokenSigner.generate("ws-7").mint(user, audience="hq", request_id="r"),
        "peer_token_expired": tiers.signer(clock=lambda: time.time() - 120).mint(
            user, audience="hq", request_id="r", ttl_s=30),
        "peer_token_audience": genuine.mint(user, audience="elsewhere", request_id="r"),
        "peer_untrusted": TokenSigner.generate("ws-9").mint(user, audience="hq", request_id="r"),
        "peer_token_invalid": "eyJhbGciOiJub25lIn0.e30.",
    }
    for code, token in cases.items():
        for method, path, body in (("GET", "/v1/models", None), ("POST", "/v1/chat/completions",
                                                                  {"model": "hq-kb", "messages": []})):
            refused = tiers.to_central(token, method, path, json=body)
            assert refused.status_code == 401, (code, refused.text)
            error = refused.json()["error"]
            assert error["code"] == code and error["type"] and error["message"], error
    denied = [r for r in _records(tiers.central_settings) if r["status"] == 401]
    assert {r["error_code"] for r in denied} >= set(cases)


def test_the_local_tier_loads_no_model_and_probes_the_central_one_with_its_own_token(tiers: Tiers) -> None:
    health = httpx.get(f"{tiers.local}/health", timeout=30).json()
    assert [(m["id"], m["engine"]) for m in health["models"]] == [("hq-chat", "garrison")]
    listed = json.loads(_run("models", "list", "--json", "--config", str(tiers.local_config),
                             home=tiers.local_config.parent))  # probes each replica once
    assert [m["id"] for m in listed] == ["hq-chat"]
    assert [r["state"] for r in listed[0]["upstream"]["replicas"]] == ["healthy"]
    probes = [_details(r, "federation") for r in _records(tiers.central_settings)
              if r["route"] == "/v1/models" and r["status"] == 200 and r["key_name"] == "gateway:ws-7@ws-7"]
    assert probes and all(p["peer_request_id"].startswith("probe-") for p in probes)


def test_a_client_without_a_certificate_is_refused_at_the_tls_handshake(tiers: Tiers) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{tiers.central}/health", verify=_tls(tiers.ca), timeout=10)
    (tiers.client.cert.parent / "other").mkdir()
    stranger = Pki(tiers.client.cert.parent / "other").client("ws-7")
    with pytest.raises(httpx.TransportError):  # and one whose certificate no trusted CA signed
        httpx.get(f"{tiers.central}/health", verify=_tls(tiers.ca, stranger), timeout=10)
    with_cert = httpx.get(f"{tiers.central}/health", verify=_tls(tiers.ca, tiers.client), timeout=10)
    assert with_cert.status_code == 200
