"""Upstream models through both garrison surfaces, with real clients and real engines behind a front garrison.

The front `garrison serve` loads no model of its own; its [[models]] are served by llama_cpp.server (an
OpenAI upstream, like vLLM) and by a second garrison (its /v1 and its Ollama /api). So an Ollama client uses
a vLLM-style model and an OpenAI client an Ollama one. Run with the model lock.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from peers import GarrisonPeer, LlamaCppServer

from garrison.registry import embedded_model_path, sha256_file
from processes import ServerProcess, clean_env, free_port

pytestmark = pytest.mark.model
PEER_MODEL = "smollm2-135m-instruct"


class Front:
    def __init__(self, url: str, key: str, config: Path, env: dict[str, str]) -> None:
        self.url, self.key, self.config, self.env = url, key, config, env
        self.clients: list[openai.OpenAI | ollama.Client] = []  # closed with the fixture

    def close(self) -> None:
        for client in self.clients:
            client.close()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def _config(path: Path, llama: LlamaCppServer, peer: GarrisonPeer, digest: str) -> None:
    path.write_text(f"""
[[models]]
id = "vllm-style"
engine = "openai"
upstreams = ["{llama.url}/v1"]
upstream_model = "up-model"
capabilities = ["chat", "completions"]
context_length = 1024

[[models]]
id = "peer-ollama"
engine = "ollama"
upstreams = ["{peer.url}"]
upstream_model = "{PEER_MODEL}"
api_key_env = "PEER_KEY"
revision = "sha256:{digest}"

[[models]]
id = "peer-openai"
engine = "openai"
upstreams = ["{peer.url}/v1"]
upstream_model = "{PEER_MODEL}"
api_key_env = "PEER_KEY"

[[models]]
id = "peer-embed"
engine = "openai"
kind = "embed"
upstreams = ["{peer.url}/v1"]
upstream_model = "all-minilm-l6-v2"
api_key_env = "PEER_KEY"
""")


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    llama = LlamaCppServer().start()
    peer = GarrisonPeer(tmp_path_factory.mktemp("peer")).start()
    home = tmp_path_factory.mktemp("front")
    config = home / "garrison.toml"
    _config(config, llama, peer, sha256_file(embedded_model_path()))  # type: ignore[arg-type]
    port = free_port()
    env = clean_env(PEER_KEY=peer.key)  # type: ignore[attr-defined]
    cmd = [sys.executable, "-m", "garrison", "serve", "--config", str(config), "--home", str(home),
           "--host", "127.0.0.1", "--port", str(port), "--no-default-model", "--no-embeddings"]
    server = ServerProcess(cmd, f"http://127.0.0.1:{port}/health", "front garrison", env).start()
    front = Front(f"http://127.0.0.1:{port}", (home / "admin.key").read_text().strip(), config, env)
    try:
        yield front
    finally:
        front.close()
        server.stop()
        peer.stop()
        llama.stop()


def _openai(front: Front) -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key=front.key, max_retries=0, timeout=120)
    front.clients.append(client)
    return client


def _ollama(front: Front) -> ollama.Client:
    client = ollama.Client(host=front.url, headers=front.headers, timeout=120)
    front.clients.append(client)
    return client


def test_an_ollama_client_uses_a_vllm_style_model(front: Front) -> None:
    client = _ollama(front)
    options = {"num_predict": 8, "temperature": 0, "seed": 1}
    whole = client.chat(model="vllm-style", messages=[{"role": "user", "content": "Say hello."}], options=options)
    parts = list(client.chat(model="vllm-style", messages=[{"role": "user", "content": "Say hello."}],
                             options=options, stream=True))
    assert whole.message.content and whole.eval_count == 8
    assert len(parts) >= 3 and parts[-1].done
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    raw = client.generate(model="vllm-style", prompt="The capital of France is", raw=True, options=options)
    assert raw.response.strip()


def test_an_openai_client_uses_an_ollama_model(front: Front) -> None:
    client = _openai(front)
    messages = [{"role": "user", "content": "Say hello."}]
    whole = client.chat.completions.create(model="peer-ollama", messages=messages, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model="peer-ollama", messages=messages, max_tokens=8,  # type: ignore[arg-type]
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert whole.choices[0].message.content and text == whole.choices[0].message.content
    assert whole.usage is not None and whole.usage.completion_tokens == 8
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    completion = client.completions.create(model="peer-openai", prompt="1, 2, 3,", max_tokens=4, temperature=0)
    assert completion.choices[0].text.strip()


def test_embeddings_through_both_surfaces(front: Front) -> None:
    vectors = _openai(front).embeddings.create(model="peer-embed", input=["a cat", "a dog"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384
    result = _ollama(front).embed(model="peer-embed", input=["a cat"])
    assert result.embeddings[0] == pytest.approx(vectors.data[0].embedding, abs=1e-5)


def test_upstream_errors_in_each_surface_shape(front: Front) -> None:
    client = _openai(front)
    with pytest.raises(openai.BadRequestError) as unsupported:  # no `fim` capability declared
        client.completions.create(model="vllm-style", prompt="def f(", suffix="return 1", max_tokens=4)
    assert unsupported.value.code == "unsupported_feature"
    with pytest.raises(openai.BadRequestError) as preserved:  # the peer's own 400, passed on verbatim
        client.completions.create(model="peer-openai", prompt="def f(", suffix="return 1", max_tokens=4)
    assert "fill-in-the-middle" in str(preserved.value.message)
    answer = httpx.post(f"{front.url}/api/generate", headers=front.headers, timeout=60,
                        json={"model": "peer-openai", "prompt": "def f(", "suffix": "return 1", "stream": False})
    assert answer.status_code == 400 and "fill-in-the-middle" in answer.json()["error"]


def test_health_and_models_list_show_each_upstream(front: Front) -> None:
    health = httpx.get(f"{front.url}/health", timeout=10).json()
    states = {m["id"]: m for m in health["models"]}
    assert [r["state"] for r in states["peer-ollama"]["upstream"]["replicas"]] == ["healthy"]
    assert "reason" not in states["peer-ollama"]["upstream"]["replicas"][0]  # /health is public
    assert states["vllm-style"]["upstream"]["engine"] == "openai"
    listed = subprocess.run([sys.executable, "-m", "garrison", "models", "list", "--json", "--config",
                             str(front.config)], capture_output=True, text=True, env=front.env, check=True)
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows["peer-openai"]["upstream"]["replicas"][0]["state"] == "healthy"
    assert rows["peer-ollama"]["upstream"]["replicas"][0]["revision"] == sha256_file(embedded_model_path())
    assert rows["vllm-style"]["upstream"]["replicas"][0]["url"].endswith("/v1")
