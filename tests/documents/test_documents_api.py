"""The documents API on a real server (loopback, real keys and audit log, the real embedder): scopes,
clearance filtering, uploads and every bad input with its status, nothing partly stored."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from doc_files import write_pdf, write_text

from garrison.api.server import background_server, build
from garrison.settings import load_settings

SECRET_TEXT = "zqmergerterms"


@dataclass
class Server:
    url: str
    app: object
    upload_dir: Path
    keys: dict[str, str]

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.keys[who]}"}, timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("docs-api")
    write_text(base / "hr" / "leave.md", "# Leave\nEmployees get 25 days of paid vacation.")
    write_text(base / "hr" / "merger.md",
               f"---\nclassification: restricted\n---\n# Merger\nThe merger terms are {SECRET_TEXT}.")
    write_pdf(base / "eng" / "oncall.pdf", ["Intro.", "The on-call rota changes every Monday."], title="On-call")
    (base / "uploads").mkdir()
    settings = load_settings(
        home=base / "home", host="127.0.0.1", port=0, default_model=False, engine={"threads": 1},
        documents={"roots": [
            {"path": str(base / "hr"), "collection": "hr", "label": "internal"},
            {"path": str(base / "eng"), "collection": "eng", "label": "public"},
            {"path": str(base / "uploads"), "collection": "uploads", "label": "internal", "upload": True},
        ], "max_file_bytes": 60_000, "sync_interval": 0},
    )
    app = build(settings)
    security = app.state.security  # type: ignore[attr-defined]
    app.state.documents.sync()  # type: ignore[attr-defined]
    keys = {"admin": security.bootstrap_key}
    for name, scopes, clearance in [("reader", ["documents"], "internal"), ("chat", ["chat"], "restricted"),
                                    ("writer", ["documents:write"], "internal"),
                                    ("public", ["documents"], "public")]:
        keys[name] = security.keys.create(name=name, env="dev", scopes=scopes, clearance=clearance).token
    keys["eng-writer"] = security.keys.create(name="eng-writer", env="dev", scopes=["documents:write"],
                                              clearance="internal", collections=["eng"]).token
    keys["eng-only"] = security.keys.create(name="eng-only", env="dev", scopes=["documents"], clearance="restricted",
                                            collections=["eng"]).token
    with background_server(settings, app) as url:
        yield Server(url, app, base / "uploads", keys)


def test_list_and_search_show_only_what_the_clearance_allows(server: Server) -> None:
    with server.client("reader") as http:
        listed = http.get("/v1/documents").json()["data"]
        assert sorted(d["path"] for d in listed) == ["leave.md", "oncall.pdf"]
        found = http.post("/v1/documents/search", json={"query": "merger terms", "k": 5}).json()
        assert found["data"] and all(h["label"] in ("public", "internal") for h in found["data"])
        assert SECRET_TEXT not in str(found)
        pdf = http.post("/v1/documents/search", json={"query": "on-call rota", "k": 1, "collections": ["eng"]}).json()
        hit = pdf["data"][0]
        assert (hit["title"], hit["path"], hit["page"], hit["label"], hit["number"]) == (
            "On-call", "oncall.pdf", 2, "public", 1)
        assert hit["document_id"].startswith("doc_") and hit["score"] > 0 and pdf["classification"] == "public"
    with server.client("admin") as http:
        top = http.post("/v1/documents/search", json={"query": "merger terms", "k": 1}).json()
        assert top["data"][0]["path"] == "merger.md" and top["classification"] == "restricted"


def test_a_key_limited_to_collections_sees_nothing_else(server: Server) -> None:
    with server.client("eng-only") as http:
        assert [d["collection"] for d in http.get("/v1/documents").json()["data"]] == ["eng"]
        hits = http.post("/v1/documents/search", json={"query": "merger terms vacation", "k": 5}).json()["data"]
        assert hits and {h["collection"] for h in hits} == {"eng"}
        refused = http.post("/v1/documents/search", json={"query": "merger", "collections": ["hr"]})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "collection_not_allowed"
        assert http.get("/v1/documents", params={"collection": "hr"}).status_code == 403


def test_scopes_and_unknown_collections(server: Server) -> None:
    with server.client("chat") as http:
        denied = http.get("/v1/documents")
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "missing_scope"
    with server.client("reader") as http:
        missing = http.post("/v1/documents/search", json={"query": "x", "collections": ["finance"]})
        assert missing.status_code == 404
        assert "'finance'" in missing.json()["error"]["message"]
        assert http.post("/v1/documents/sync").status_code == 403
        assert http.post("/v1/documents", files={"file": ("a.md", b"# a")}).status_code == 403
        assert http.post("/v1/documents/search", json={"query": ""}).status_code == 400
    with server.client("admin") as http:
        synced = http.post("/v1/documents/sync")
        assert synced.status_code == 200 and synced.json()["unchanged"] == 3


def _state(server: Server) -> tuple[list[str], int]:
    library = server.app.state.documents  # type: ignore[attr-defined]
    return sorted(p.name for p in server.upload_dir.rglob("*")), library.index.chunk_count()


def test_bad_uploads_each_get_their_status_and_store_nothing(server: Server, tmp_path: Path) -> None:
    before = _state(server)
    pdf = write_pdf(tmp_path / "ok.pdf", ["fine"]).read_bytes()
    cases = [
        ({"file": ("../escape.md", b"# hi")}, {}, 403, "path_outside_root"),
        ({"file": ("sub/../../escape.md", b"# hi")}, {}, 403, "path_outside_root"),
        ({"file": ("secret.md", b"# hi")}, {"label": "restricted"}, 403, "label_above_clearance"),
        ({"file": ("fm.md", b"---\nclassification: confidential\n---\n# hi\ntext")}, {}, 403, "label_above_clearance"),
        ({"file": ("big.txt", b"x " * 40_000)}, {}, 413, "payload_too_large"),
        ({"file": ("huge.txt", b"x" * 2_000_000)}, {}, 413, "payload_too_large"),
        ({"file": ("photo.png", b"\x89PNG....")}, {}, 415, "unsupported_media_type"),
        ({"file": ("cut.pdf", pdf[:100])}, {}, 422, "unprocessable_document"),
        ({"file": ("bad.md", b"---\nclassification: top-secret\n---\nx")}, {}, 422, "unprocessable_document"),
        ({"file": ("x.md", b"# hi")}, {"collection": "hr"}, 403, "not_an_upload_root"),
        ({"file": ("x.md", b"# hi")}, {"collection": "finance"}, 404, "collection_not_found"),
    ]
    with server.client("writer") as http:
        for files, data, status, code in cases:
            response = http.post("/v1/documents", files=files, data=data)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), files
            assert response.json()["error"]["message"]
    assert _state(server) == before


def test_a_key_limited_to_collections_uploads_only_into_those(server: Server) -> None:
    before = _state(server)
    with server.client("eng-writer") as http:
        for data in ({}, {"collection": "uploads"}):
            refused = http.post("/v1/documents", files={"file": ("note.md", b"# Note\nhello")}, data=data)
            assert (refused.status_code, refused.json()["error"]["code"]) == (403, "collection_not_allowed")
            assert "'uploads'" in refused.json()["error"]["message"]
    assert _state(server) == before


def test_an_upload_is_stored_labelled_and_searchable_then_never_overwritten(server: Server) -> None:
    with server.client("writer") as http:
        created = http.post("/v1/documents", files={"file": ("policy.md", b"# Remote work\nWork from anywhere.")},
                            data={"label": "public"})
        assert created.status_code == 201
        record = created.json()
        assert (record["collection"], record["path"], record["label"], record["kind"]) == (
            "uploads", "policy.md", "public", "markdown")
        again = http.post("/v1/documents", files={"file": ("policy.md", b"# other")})
        assert again.status_code == 409
    with server.client("public") as http:
        hits = http.post("/v1/documents/search", json={"query": "remote work", "k": 1}).json()["data"]
        assert hits[0]["document_id"] == record["id"]
    assert (server.upload_dir / "policy.md").read_bytes() == b"# Remote work\nWork from anywhere."


def test_the_audit_log_names_requests_never_document_text(server: Server) -> None:
    security = server.app.state.security  # type: ignore[attr-defined]
    with server.client("admin") as http:
        http.post("/v1/documents/search", json={"query": "merger terms", "k": 3})
    records = security.audit.query(limit=None)
    searches = [r for r in records if r["route"] == "/v1/documents/search" and r["key_name"] == "admin"]
    assert searches and searches[-1]["reason"].startswith("retrieved doc_") and "(restricted)" in searches[-1]["reason"]
    assert any(r["route"] == "/v1/documents" and (r["reason"] or "").startswith("document doc_") for r in records)
    assert SECRET_TEXT not in str(records) and "25 days" not in str(records)
