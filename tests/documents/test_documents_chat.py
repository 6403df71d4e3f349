"""Grounded answers through the real server, the real chat model and real clients (openai SDK, ollama).

A knowledge model and per-request `documents`: citations and the answer's classification on the
reply (in a stream: one chunk before [DONE]); nothing above the key's clearance in the citations; the
audit record names the document ids and labels retrieved, never their text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from doc_files import write_pdf, write_text

from garrison.api.server import background_server, build
from garrison.settings import load_settings

pytestmark = pytest.mark.model

MODEL = "smollm2-135m-instruct"
SECRET = "zqfalconprice"


@dataclass
class Server:
    url: str
    app: object
    keys: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("docs-chat")
    write_text(base / "hr" / "leave.md", "# Annual leave\nEvery employee gets 25 days of paid vacation per year.")
    write_text(base / "hr" / "falcon.md", f"---\nclassification: restricted\n---\n# Project Falcon\n"
                                          f"The vacation of the Falcon team is secret; the price is {SECRET}.")
    write_pdf(base / "eng" / "oncall.pdf", ["Intro.", "The on-call rota changes every Monday."], title="On-call")
    settings = load_settings(
        home=base / "home", host="127.0.0.1", port=0,
        engine={"threads": int(os.environ.get("GARRISON_TEST_THREADS", "2")), "context_length": 2048, "max_queue": 8},
        documents={"roots": [{"path": str(base / "hr"), "collection": "hr", "label": "internal"},
                             {"path": str(base / "eng"), "collection": "eng", "label": "public"}],
                   "sync_interval": 0},
        knowledge=[{"id": "handbook", "model": MODEL, "collections": ["hr"], "k": 3}],
    )
    app = build(settings)
    app.state.documents.sync()  # type: ignore[attr-defined]
    security = app.state.security  # type: ignore[attr-defined]
    keys = {"admin": security.bootstrap_key}
    keys["staff"] = security.keys.create(name="staff", env="dev", scopes=["chat"], clearance="internal").token
    keys["bot"] = security.keys.create(name="bot", env="dev", scopes=["chat"], models=["handbook"],
                                       clearance="restricted").token
    with background_server(settings, app) as url:
        yield Server(url, app, keys)


def _openai(server: Server, who: str):  # type: ignore[no-untyped-def]
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=server.keys[who], max_retries=0, timeout=120)


QUESTION = [{"role": "user", "content": "How many vacation days do employees get?"}]


def test_knowledge_models_are_listed_on_both_surfaces(server: Server) -> None:
    ids = {m.id for m in _openai(server, "staff").models.list().data}
    assert {"handbook", MODEL} <= ids
    assert {m.id for m in _openai(server, "bot").models.list().data} == {"handbook"}
    tags = httpx.get(f"{server.url}/api/tags", headers=server.headers("bot")).json()["models"]
    assert [t["name"] for t in tags] == ["handbook"]


def test_a_knowledge_model_answers_with_citations_below_the_clearance(server: Server) -> None:
    reply = _openai(server, "staff").chat.completions.create(
        model="handbook", messages=QUESTION, max_tokens=24, temperature=0)  # type: ignore[arg-type]
    extra = reply.model_extra or {}
    citations = extra["citations"]
    assert citations and citations[0]["path"] == "leave.md" and citations[0]["number"] == 1
    assert all(c["label"] in ("public", "internal") and c["collection"] == "hr" for c in citations)
    assert SECRET not in json.dumps(citations) and extra["classification"] == "internal"
    assert reply.choices[0].message.content
    plain = _openai(server, "staff").chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=1, temperature=0)  # type: ignore[arg-type]
    assert reply.usage.prompt_tokens > plain.usage.prompt_tokens + 20  # the chunks were in the prompt
    assert "citations" not in (plain.model_extra or {})


def test_per_request_documents_stream_citations_in_a_chunk_before_done(server: Server) -> None:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 8, "temperature": 0, "stream": True,
            "documents": {"collections": ["hr"], "k": 2}}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=server.headers("admin"),
                      timeout=120) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    with_citations = [i for i, c in enumerate(chunks) if "citations" in c]
    assert with_citations == [len(chunks) - 1]  # one chunk, the last before [DONE], after every token
    last = chunks[-1]
    assert last["choices"] == [] and last["classification"] == "restricted"  # admin may see Falcon
    assert {c["path"] for c in last["citations"]} == {"leave.md", "falcon.md"}
    stream = _openai(server, "staff").chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=8, temperature=0, stream=True,  # type: ignore[arg-type]
        extra_body={"documents": {"collections": ["hr"], "k": 2}})
    final = [c for c in stream if (c.model_extra or {}).get("citations")]
    assert len(final) == 1 and SECRET not in json.dumps(final[0].model_extra)
    assert {c["label"] for c in final[0].model_extra["citations"]} == {"internal"}  # type: ignore[index]


def test_the_ollama_surface_grounds_and_cites_too(server: Server) -> None:
    import ollama

    with ollama.Client(host=server.url, headers=server.headers("bot")) as client:
        answer = client.chat(model="handbook", messages=QUESTION, options={"num_predict": 8, "temperature": 0})
    assert answer.message.content is not None
    raw = httpx.post(f"{server.url}/api/chat", headers=server.headers("bot"), timeout=120, json={
        "model": "handbook", "messages": QUESTION, "stream": True, "options": {"num_predict": 8}}).text
    lines = [json.loads(line) for line in raw.splitlines()]
    assert lines[-1]["done"] is True and lines[-1]["citations"][0]["path"] in ("leave.md", "falcon.md")
    assert all("citations" not in line for line in lines[:-1])


def test_bad_documents_requests_are_refused_in_the_surface_shape(server: Server) -> None:
    headers = server.headers("staff")
    unknown = httpx.post(f"{server.url}/v1/chat/completions", headers=headers, timeout=60, json={
        "model": MODEL, "messages": QUESTION, "documents": {"collections": ["finance"]}})
    assert unknown.status_code == 404 and "'finance'" in unknown.json()["error"]["message"]
    outside = httpx.post(f"{server.url}/v1/chat/completions", headers=headers, timeout=60, json={
        "model": "handbook", "messages": QUESTION, "documents": {"collections": ["eng"]}})
    assert outside.status_code == 403
    ollama_unknown = httpx.post(f"{server.url}/api/chat", headers=headers, timeout=60, json={
        "model": MODEL, "messages": QUESTION, "stream": False, "documents": {"collections": ["finance"]}})
    assert ollama_unknown.status_code == 404 and "'finance'" in ollama_unknown.json()["error"]


def test_the_audit_record_names_ids_and_labels_never_text(server: Server) -> None:
    _openai(server, "staff").chat.completions.create(
        model="handbook", messages=QUESTION, max_tokens=4, temperature=0)  # type: ignore[arg-type]
    security = server.app.state.security  # type: ignore[attr-defined]
    records = [r for r in security.audit.query(limit=None) if r["model"] in ("handbook", MODEL)]
    finished = [r for r in records if r["event"] == "request.finished" and r["key_name"] == "staff"]
    details = json.loads(finished[-1]["details"])
    retrieved = details["documents"]
    assert retrieved and all(set(d) == {"number", "document_id", "collection", "label", "page"} for d in retrieved)
    assert all(d["label"] != "restricted" for d in retrieved)
    everything = json.dumps(records)
    assert SECRET not in everything and "25 days" not in everything
