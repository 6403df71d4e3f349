"""The console's documents page and grounded chat over a scripted chat engine, the real embedder and index:
listing, search and uploads filtered and refused exactly as the documents API does, citations kept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest
from tests.console.conftest import ConsoleApp, FakeClock, csrf_of, sign_in
from tests.fakes import ScriptedEngine, service

from garrison.settings import load_settings

SECRET = "zqcobaltmerger"  # only in the confidential document
READ_WRITE = ("chat", "documents", "documents:write")


@pytest.fixture
def docs_app(tmp_path: Path) -> Iterator[ConsoleApp]:
    from garrison.api.app import create_app
    from garrison.documents.knowledge import attach_documents
    from garrison.security import setup

    (tmp_path / "hr").mkdir()
    (tmp_path / "uploads").mkdir()
    (tmp_path / "hr" / "leave.md").write_text("# Annual leave\nEvery employee gets 25 days of paid vacation.")
    (tmp_path / "hr" / "merger.md").write_text(
        f"---\nclassification: confidential\n---\n# Cobalt merger\nThe vacation freeze code is {SECRET}.")
    clock = FakeClock()
    settings = load_settings(
        home=tmp_path / "home", engine={"embeddings": False}, auth={"enabled": True, "env": "dev"},
        documents={"roots": [
            {"path": str(tmp_path / "hr"), "collection": "hr", "label": "public"},
            {"path": str(tmp_path / "uploads"), "collection": "uploads", "label": "internal", "upload": True},
        ], "max_file_bytes": 50_000, "sync_interval": 0},
        knowledge=[{"id": "handbook", "model": "fake", "collections": ["hr"], "k": 3}],
    )
    security = setup(settings, clock=clock)
    engine = ScriptedEngine(["Twenty-five", " days [1]."], prompt_tokens=7)
    inference = service({"fake": engine}, settings, context_length=2048)
    library = attach_documents(settings, inference)
    assert library is not None
    library.sync()
    app = create_app(settings, inference, security, library)
    try:
        yield ConsoleApp(app, engine, clock)
    finally:
        library.close()
        security.close()


def _stored(app: ConsoleApp) -> tuple[list[str], int]:
    library = app.app.state.documents
    return sorted(p.name for p in library.roots.get("uploads").path.rglob("*")), library.index.chunk_count()


async def test_the_list_and_search_show_only_what_clearance_and_collections_allow(docs_app: ConsoleApp) -> None:
    docs_app.add_user("pat", clearance="public", scopes=READ_WRITE)
    docs_app.add_user("cleo", clearance="confidential", scopes=READ_WRITE)
    docs_app.add_user("ulla", clearance="restricted", scopes=READ_WRITE, collections=("uploads",))
    for who, sees_leave, sees_secret in (("pat", True, False), ("cleo", True, True), ("ulla", False, False)):
        async with docs_app.client() as http:
            await sign_in(http, who)
            page = await http.get("/console/documents")
            assert page.status_code == 200
            assert ("Annual leave" in page.text) is sees_leave, who
            assert ("Cobalt merger" in page.text) is sees_secret, who
            found = await http.get("/console/documents", params={"q": f"vacation freeze code {SECRET}"})
            assert found.status_code == 200
            assert (SECRET in found.text.replace(f'value="vacation freeze code {SECRET}"', "")
                    .replace(f"“vacation freeze code {SECRET}”", "")) is sees_secret, who
            if sees_secret:
                assert 'badge label-confidential' in found.text


async def test_uploads_are_refused_as_the_api_refuses_them_and_store_nothing(docs_app: ConsoleApp) -> None:
    docs_app.add_user("pat", clearance="public", scopes=READ_WRITE)
    docs_app.add_user("rita", clearance="restricted", scopes=("chat", "documents"))
    before = _stored(docs_app)
    cases = [
        ({"label": "internal"}, ("a.md", b"# hi\nSome text."), 403, "above the uploader's clearance 'public'"),
        ({}, ("b.md", b"# hi\nSome text."), 403, "labelled 'internal' (the root's label)"),  # the root is internal
        ({}, ("c.md", b"---\nclassification: confidential\n---\n# x\nSome text."), 403, "its front matter"),
        ({"label": "public"}, ("../d.md", b"# hi\nSome text."), 403, "Upload refused"),
        ({"label": "public"}, ("e.png", b"\x89PNG...."), 415, "Upload refused"),
        ({"label": "public"}, ("f.txt", b"x " * 30_000), 413, "Upload refused"),
        ({"label": "public", "collection": "hr"}, ("g.md", b"# hi\nSome text."), 403, "not an upload root"),
    ]
    async with docs_app.client() as http:
        await sign_in(http, "pat")
        token = csrf_of((await http.get("/console/documents")).text)
        for data, file, status, says in cases:
            response = await http.post("/console/documents", data={**data, "csrf_token": token}, files={"file": file})
            assert response.status_code == status, file
            assert 'role="alert"' in response.text and says in unescape(response.text), file
        forged = await http.post("/console/documents", data={"label": "public", "csrf_token": "0" * 64},
                                 files={"file": ("h.md", b"# hi\nSome text.")})
        assert forged.status_code == 403 and "security token" in forged.text
    async with docs_app.client() as http:
        await sign_in(http, "rita")  # may read, may not write
        page = await http.get("/console/documents")
        assert 'id="upload-form"' not in page.text
        refused = await http.post("/console/documents", data={"csrf_token": csrf_of(page.text)},
                                  files={"file": ("i.md", b"# hi\nSome text.")})
        assert refused.status_code == 403 and "documents:write" in unescape(refused.text)
    docs_app.add_user("hank", clearance="restricted", scopes=READ_WRITE, collections=("hr",))
    async with docs_app.client() as http:
        await sign_in(http, "hank")  # may write, but only into collections it holds: not 'uploads'
        token = csrf_of((await http.get("/console/documents")).text)
        refused = await http.post("/console/documents", data={"label": "public", "csrf_token": token},
                                  files={"file": ("j.md", b"# hi\nSome text.")})
        assert refused.status_code == 403 and "may not write into the collection 'uploads'" in unescape(refused.text)
    assert _stored(docs_app) == before
    denials = [r for r in docs_app.security.audit.query(limit=None)
               if r["route"] == "/console/documents" and r["method"] == "POST"]
    assert len(denials) == len(cases) + 3 and all(r["decision"] == "deny" for r in denials)


async def test_an_upload_is_listed_labelled_and_never_overwritten(docs_app: ConsoleApp) -> None:
    docs_app.add_user("pat", clearance="public", scopes=READ_WRITE)
    async with docs_app.client() as http:
        await sign_in(http, "pat")
        token = csrf_of((await http.get("/console/documents")).text)
        created = await http.post("/console/documents", data={"label": "public", "csrf_token": token},
                                  files={"file": ("remote.md", b"# Remote work\nWork from anywhere on Fridays.")})
        assert created.status_code == 201
        assert "Uploaded remote.md into uploads, labelled public." in created.text
        assert "Remote work" in created.text  # listed at once
        again = await http.post("/console/documents", data={"label": "public", "csrf_token": token},
                                files={"file": ("remote.md", b"# other")})
        assert again.status_code == 409 and "already exists" in again.text
        found = await http.get("/console/documents", params={"q": "work from anywhere"})
        assert "Remote work" in found.text
    record = [r for r in docs_app.security.audit.query(limit=None) if r["route"] == "/console/documents"
              and r["status"] == 201][-1]
    assert "uploaded document doc_" in record["reason"] and "Fridays" not in json.dumps(record)


async def test_sync_now_is_for_admins_and_reports_counts(docs_app: ConsoleApp) -> None:
    docs_app.add_user("pat", clearance="public", scopes=READ_WRITE)
    docs_app.add_user("ada", role="admin", clearance="restricted", scopes=("chat", "admin"))
    async with docs_app.client() as http:
        await sign_in(http, "pat")
        page = await http.get("/console/documents")
        assert "Last sync" in page.text and 'id="sync-now"' not in page.text
        assert (await http.post("/console/documents/sync", data={"csrf_token": csrf_of(page.text)})).status_code == 403
    async with docs_app.client() as http:
        await sign_in(http, "ada")
        page = await http.get("/console/documents")
        synced = await http.post("/console/documents/sync", data={"csrf_token": csrf_of(page.text)})
        assert synced.status_code == 200 and "Synced: 0 added, 0 updated, 0 removed" in synced.text
        assert "2 unchanged" in synced.text


async def test_knowledge_answers_stream_citations_and_keep_them_in_the_conversation(docs_app: ConsoleApp) -> None:
    docs_app.add_user("pat", clearance="public", scopes=("chat",))
    docs_app.add_user("ulla", clearance="restricted", scopes=("chat",), collections=("uploads",))
    async with docs_app.client() as http:
        await sign_in(http, "ulla")
        assert 'value="handbook"' not in (await http.get("/console/chat")).text  # may not read hr
    async with docs_app.client() as http:
        await sign_in(http, "pat")
        page = await http.get("/console/chat")
        assert 'value="handbook"' in page.text and 'value="fake"' in page.text
        response = await http.post(
            "/console/chat", data={"model": "handbook", "message": f"What is the vacation freeze code {SECRET}?",
                                   "csrf_token": csrf_of(page.text)}, headers={"accept": "text/event-stream"})
        frames = [json.loads(f.split("data: ", 1)[1]) for f in response.text.split("\n\n")
                  if f and not f.endswith("[DONE]")]
        done = next(f for f in frames if f.get("done"))
        assert done["label"] == "public" and [c["title"] for c in done["citations"]] == ["Annual leave"]
        assert {c["label"] for c in done["citations"]} == {"public"}
        prompt = json.dumps([m.content for m in docs_app.engine.requests[-1].messages])
        assert "25 days" in prompt and SECRET not in prompt.replace(f"code {SECRET}?", "")
        conv = await http.get(frames[0]["url"])
        assert 'badge label-public" title="classification of this answer"' in conv.text
        assert "[1] Annual leave" in conv.text and "Cobalt merger" not in conv.text
