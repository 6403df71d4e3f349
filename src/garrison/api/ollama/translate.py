"""Pure translators between Ollama bodies and garrison's native types (no I/O, unit-tested alone)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from garrison import __version__
from garrison.api.ollama.schemas import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    Format,
    GenerateRequest,
    MessageIn,
    Options,
)
from garrison.domain import (
    MAX_STOP_SEQUENCES_OLLAMA,
    ChatMessage,
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    GenerationDone,
    GenerationRequest,
    ResponseFormat,
    RetrievalOptions,
    SamplingParams,
    Timings,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
    check_stops,
)
from garrison.engines.fim import fim_prompt, supports_fim
from garrison.engines.gguf import gguf_of
from garrison.errors import InvalidRequest, NotFound
from garrison.registry import ModelInfo

# The Ollama API level garrison speaks; clients compare it against the features they need.
OLLAMA_VERSION = "0.6.8"
# Ollama's sampling defaults, used when `options` leaves a value out.
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.9
DEFAULT_REPEAT_PENALTY = 1.1
# garrison loads every model at start and never unloads it.
NEVER_EXPIRES = "9999-12-31T23:59:59Z"


def rfc3339(timestamp: float) -> str:
    """A Unix time as Ollama writes it: RFC 3339, UTC, with a Z."""
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def resolve_model(name: str, known: Iterable[str]) -> str:
    """Ollama's implicit tag: `x:latest` names the model `x` unless a model is literally called `x:latest`."""
    ids = set(known)
    if name not in ids and name.endswith(":latest") and name.removesuffix(":latest") in ids:
        return name.removesuffix(":latest")
    return name


def model_not_found(name: str) -> NotFound:
    """Ollama's own wording for an unknown model (404)."""
    return NotFound(f'model "{name}" not found', param="model", code="model_not_found")


def unsupported(name: str, what: str) -> InvalidRequest:
    """Ollama's wording when a model cannot do what was asked (400)."""
    return InvalidRequest(f'"{name}" does not support {what}', param="model", code="unsupported")


def sampling(options: Options | None) -> SamplingParams:
    """Ollama options onto garrison's sampling with Ollama's defaults; num_ctx is ignored (fixed at load)."""
    o = options or Options()
    return SamplingParams(
        max_tokens=o.num_predict if o.num_predict is not None and o.num_predict > 0 else None,
        temperature=DEFAULT_TEMPERATURE if o.temperature is None else o.temperature,
        top_p=DEFAULT_TOP_P if o.top_p is None else o.top_p,
        top_k=DEFAULT_TOP_K if o.top_k is None else o.top_k,
        min_p=o.min_p or 0.0,
        seed=o.seed if o.seed is not None and o.seed >= 0 else None,
        stop=check_stops(o.stop, MAX_STOP_SEQUENCES_OLLAMA, "options.stop"),
        presence_penalty=o.presence_penalty or 0.0,
        frequency_penalty=o.frequency_penalty or 0.0,
        repeat_penalty=DEFAULT_REPEAT_PENALTY if o.repeat_penalty is None else o.repeat_penalty,
        max_tokens_is_cap=True,  # num_predict past the context means "until it is full"
    )


def response_format(fmt: Format) -> ResponseFormat | None:
    """`"json"` is any JSON object, a dict is a JSON schema the output must satisfy."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return ResponseFormat(type="json_object")
    if isinstance(fmt, dict):
        return ResponseFormat(type="json_schema", schema=fmt) if fmt else ResponseFormat(type="json_object")
    raise InvalidRequest(f'invalid format {fmt!r}: expected "json" or a JSON schema object', param="format")


def _common(body: GenerateRequest | ChatRequest, model: str) -> None:
    """Reject what garrison's models cannot do, in Ollama's words."""
    if body.think not in (None, False):
        raise unsupported(model, "thinking")
    if body.logprobs:
        raise InvalidRequest("logprobs are not supported", param="logprobs")


def is_load(body: GenerateRequest | ChatRequest) -> bool:
    """Ollama's 'load the model' call: nothing to generate from."""
    if isinstance(body, ChatRequest):
        return not body.messages
    return not body.prompt and not body.suffix and not body.images


def from_ollama_generate(body: GenerateRequest, model: str | None = None) -> GenerationRequest:
    """A prompt (chat-templated unless raw), or fill-in-the-middle when `suffix` is given."""
    model = model or body.model
    _common(body, model)
    if body.images:
        raise unsupported(model, "images")
    if body.template:
        raise InvalidRequest(
            "'template' is not supported: garrison applies the model's own chat template; "
            "send raw=true with a fully formatted prompt instead", param="template")
    if body.context:
        raise InvalidRequest(
            "'context' is not supported (Ollama deprecated it): send the conversation to /api/chat",
            param="context")
    common: dict[str, Any] = {"model": model, "sampling": sampling(body.options),
                              "response_format": response_format(body.format)}
    prompt = body.prompt or ""
    if body.suffix:
        return GenerationRequest(prompt=prompt, suffix=body.suffix, raw=True, **common)
    if body.raw:
        return GenerationRequest(prompt=prompt, raw=True, **common)
    messages = [ChatMessage("system", body.system)] if body.system else []
    return GenerationRequest(messages=[*messages, ChatMessage("user", prompt)], **common)


def _tool_call(call: Any, where: str, index: int) -> ToolCall:
    """Ollama's `{"function": {"name", "arguments": {...}}}` (arguments an object; a JSON string is accepted)."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequest(f"{where}: a tool call needs function.name", param="messages")
    arguments = function.get("arguments") or {}
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return ToolCall(id=str(call.get("id") or f"call_{index}"), name=function["name"], arguments=text)


def _message(message: MessageIn, model: str, index: int) -> ChatMessage:
    if message.images:
        raise unsupported(model, "images")
    calls = [_tool_call(c, f"messages[{index}].tool_calls[{i}]", i) for i, c in enumerate(message.tool_calls or [])]
    return ChatMessage(role=message.role, content=message.content or "", tool_calls=calls,
                       name=message.tool_name if message.role == "tool" else None)


def _tools(tools: list[dict[str, Any]] | None) -> list[ToolSpec]:
    specs = []
    for i, tool in enumerate(tools or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(f"tools[{i}]: expected {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}",
                                 param=f"tools.{i}")
        specs.append(ToolSpec(name=function["name"], description=str(function.get("description") or ""),
                              parameters=function.get("parameters") or {"type": "object", "properties": {}}))
    return specs


def from_ollama_chat(body: ChatRequest, model: str | None = None) -> GenerationRequest:
    """Ollama offers `tools` to the model to use as it likes (tool_choice auto); tool turns carry `tool_name`."""
    model = model or body.model
    _common(body, model)
    tools = _tools(body.tools)
    return GenerationRequest(
        model=model,
        messages=[_message(m, model, i) for i, m in enumerate(body.messages)],
        sampling=sampling(body.options),
        response_format=response_format(body.format),
        documents=RetrievalOptions(body.documents.collections, body.documents.k) if body.documents else None,
        tools=tools,
        tool_choice=ToolChoice("auto" if tools else "none"),
    )


def tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Calls as Ollama writes them: arguments as an object."""
    return [{"id": c.id, "function": {"index": i, "name": c.name, "arguments": json.loads(c.arguments or "{}")}}
            for i, c in enumerate(calls)]


def chat_tool_chunk(model: str, calls: list[ToolCall], now: float) -> dict[str, Any]:
    body = _body(model, now, True, "", False)
    body["message"]["tool_calls"] = tool_calls(calls)
    return body


def from_ollama_embed(body: EmbedRequest, model: str | None = None) -> EmbeddingRequest:
    """`input` as a string or a list; empty means 'load the model' and embeds nothing."""
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    inputs = [] if inputs == [""] else inputs
    if any(not text for text in inputs):
        raise InvalidRequest("input: every input must be a non-empty string", param="input")
    return EmbeddingRequest(model=model or body.model, inputs=inputs)


def from_ollama_embeddings(body: EmbeddingsRequest, model: str | None = None) -> EmbeddingRequest:
    return EmbeddingRequest(model=model or body.model, inputs=[body.prompt] if body.prompt else [])


def done_reason(result: Completion | GenerationDone) -> str:
    return "length" if result.finish_reason == "length" else "stop"


def metrics(timings: Timings, usage: Usage, total_ns: int) -> dict[str, int]:
    """Ollama's nanosecond metrics; time spent waiting for the model counts as its load time."""
    return {
        "total_duration": max(total_ns, timings.total_ns + timings.queued_ns + timings.load_ns),
        "load_duration": timings.load_ns + timings.queued_ns,
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": timings.prompt_eval_ns,
        "eval_count": usage.completion_tokens,
        "eval_duration": timings.eval_ns,
    }


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def _body(model: str, now: float, chat: bool, text: str, done: bool) -> dict[str, Any]:
    """The fields every generate/chat line carries; chat puts the text in a message."""
    content: dict[str, Any] = {"message": _assistant(text)} if chat else {"response": text}
    return {"model": model, "created_at": rfc3339(now), **content, "done": done}


def generate_chunk(model: str, text: str, now: float) -> dict[str, Any]:
    return _body(model, now, False, text, False)


def chat_chunk(model: str, text: str, now: float) -> dict[str, Any]:
    return _body(model, now, True, text, False)


def generate_done(model: str, done: GenerationDone, total_ns: int, now: float) -> dict[str, Any]:
    return {**_body(model, now, False, "", True), "done_reason": done_reason(done),
            **metrics(done.timings, done.usage, total_ns)}


def chat_done(model: str, done: GenerationDone, total_ns: int, now: float) -> dict[str, Any]:
    return {**_body(model, now, True, "", True), "done_reason": done_reason(done),
            **metrics(done.timings, done.usage, total_ns)}


def to_ollama_generate(result: Completion, total_ns: int, now: float) -> dict[str, Any]:
    return {**_body(result.model, now, False, result.text, True), "done_reason": done_reason(result),
            **metrics(result.timings, result.usage, total_ns)}


def to_ollama_chat(result: Completion, total_ns: int, now: float) -> dict[str, Any]:
    body = {**_body(result.model, now, True, result.text, True), "done_reason": done_reason(result),
            **metrics(result.timings, result.usage, total_ns)}
    if result.tool_calls:
        body["message"]["tool_calls"] = tool_calls(result.tool_calls)
    return body


def load_response(model: str, now: float, chat: bool) -> dict[str, Any]:
    """The answer to a load call: the model is already loaded, so it is done at once."""
    return {**_body(model, now, chat, "", True), "done_reason": "load"}


def to_ollama_embed(result: EmbeddingResult, total_ns: int, dimensions: int | None = None) -> dict[str, Any]:
    """`/api/embed`'s answer; `dimensions` may only restate the model's own (it cannot shorten vectors)."""
    if dimensions is not None and result.vectors and dimensions != len(result.vectors[0]):
        raise InvalidRequest(
            f"dimensions: model \"{result.model}\" produces {len(result.vectors[0])}-dimensional embeddings "
            "and cannot shorten them", param="dimensions")
    return {"model": result.model, "embeddings": result.vectors,
            "total_duration": max(total_ns, result.timings.total_ns),
            "load_duration": result.timings.load_ns + result.timings.queued_ns,
            "prompt_eval_count": result.prompt_tokens}


def to_ollama_embeddings(result: EmbeddingResult) -> dict[str, Any]:
    return {"embedding": result.vectors[0] if result.vectors else []}


def details(info: ModelInfo) -> dict[str, Any]:
    arch = info.architecture or ""
    return {
        "parent_model": "",
        "format": info.format,
        "family": arch,
        "families": [arch] if arch else None,
        "parameter_size": info.parameters or "",
        "quantization_level": info.quantization,
    }


def to_ollama_tag(info: ModelInfo, modified: float) -> dict[str, Any]:
    return {"name": info.id, "model": info.id, "modified_at": rfc3339(modified), "size": info.size_bytes,
            "digest": info.sha256, "details": details(info)}


def to_ollama_ps(info: ModelInfo, modified: float) -> dict[str, Any]:
    """A loaded model; all of it is in VRAM only when every layer is offloaded."""
    gguf = gguf_of(info)
    vram = info.size_bytes if gguf is not None and gguf.n_gpu_layers < 0 else 0
    return {**to_ollama_tag(info, modified), "expires_at": NEVER_EXPIRES, "size_vram": vram,
            "context_length": info.context_length}


def _json_scalar(value: Any) -> bool:
    if isinstance(value, list):
        return all(isinstance(v, str | int | float | bool) for v in value)
    return isinstance(value, str | int | float | bool)


def model_info(info: ModelInfo) -> dict[str, Any]:
    """GGUF key/values as Ollama shows them; `<arch>.context_length` is the context garrison serves."""
    arch = info.architecture or "unknown"
    out: dict[str, Any] = {"general.architecture": arch}
    out.update({k: v for k, v in info.metadata.items() if "." in k and _json_scalar(v)})
    if "dimensions" in info.metadata:
        out[f"{arch}.embedding_length"] = info.metadata["dimensions"]
    out[f"{arch}.context_length"] = info.context_length
    return out


def parameters(info: ModelInfo) -> str:
    """Modelfile-style `key value` lines (no blank ones: Continue parses every line)."""
    lines = [f"num_ctx {info.context_length}"]
    if info.kind == "generate":
        lines += [f"temperature {DEFAULT_TEMPERATURE}", f"top_k {DEFAULT_TOP_K}", f"top_p {DEFAULT_TOP_P}",
                  f"repeat_penalty {DEFAULT_REPEAT_PENALTY}"]
        gguf = gguf_of(info)
        if gguf is not None and gguf.eos_token:
            lines.append(f"stop {json.dumps(gguf.eos_token)}")
    return "\n".join(lines)


def template(info: ModelInfo) -> str:
    """The chat template (Jinja, from the GGUF); FIM models add an Ollama-style `.Suffix` branch."""
    gguf = gguf_of(info)
    if gguf is None:
        return ""
    chat = gguf.chat_template or ""
    if not supports_fim(gguf):
        return chat
    fim = fim_prompt(gguf, "{{ .Prompt }}", "{{ .Suffix }}")
    return f"{{{{- if .Suffix }}}}{fim}{{{{- else }}}}{chat}{{{{- end }}}}"


def _source(info: ModelInfo) -> str:
    """The Modelfile's FROM: the model's file name, or its id when no file backs it."""
    path = getattr(info.details, "path", None)
    return path.name if isinstance(path, Path) else info.id


def to_ollama_show(info: ModelInfo, modified: float) -> dict[str, Any]:
    tmpl = template(info)
    modelfile = ["# Modelfile generated by garrison; register models with `garrison models add`",
                 f"FROM {_source(info)}"]
    if tmpl:
        modelfile.append(f'TEMPLATE """{tmpl}"""')
    modelfile += [f"PARAMETER {line}" for line in parameters(info).splitlines()]
    capabilities = ["embedding"] if info.kind == "embed" else ["completion"]
    if "tools" in info.capabilities:
        capabilities.append("tools")
    if "fim" in info.capabilities:
        capabilities.append("insert")
    return {
        "license": str(info.metadata.get("general.license", "")),
        "modelfile": "\n".join(modelfile) + "\n",
        "parameters": parameters(info),
        "template": tmpl,
        "details": details(info),
        "model_info": model_info(info),
        "capabilities": capabilities,
        "modified_at": rfc3339(modified),
    }


def to_ollama_version() -> dict[str, str]:
    """Ollama's version field for client feature checks, and garrison's own alongside."""
    return {"version": OLLAMA_VERSION, "garrison_version": __version__}
