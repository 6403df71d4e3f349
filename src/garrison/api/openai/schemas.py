"""Request bodies of the OpenAI API, validated strictly in types, lenient to unknown fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    """Strict in types as the real APIs are ("5" is no integer, 1e309 no temperature); an int is a float."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


class ContentPart(_Body):
    type: str
    text: str | None = None


class FunctionCallIn(_Body):
    name: str
    arguments: str = ""


class ToolCallIn(_Body):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCallIn


class MessageIn(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class FunctionIn(_Body):
    name: str = Field(min_length=1)
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(_Body):
    type: Literal["function"]
    function: FunctionIn


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: FunctionCallIn | None = None
    name: str | None = None  # the Responses API's flat shape


class StreamOptions(_Body):
    include_usage: bool = False


class JsonSchemaSpec(_Body):
    name: str = "response"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class SamplingFields(_Body):
    """Sampling options common to chat and completions, plus llama.cpp/vLLM extensions."""

    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)  # OpenAI's bound; engines refuse more than they decode side by side
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logprobs: bool | int | None = None
    user: str | None = None
    # Extensions understood by llama.cpp's and vLLM's servers.
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0)
    ignore_eos: bool = False


class DocumentsIn(_Body):
    """garrison's extension on both surfaces: ground a chat answer in documents (openai SDK: `extra_body`)."""

    model_config = ConfigDict(extra="forbid")

    collections: list[str] | None = Field(default=None, min_length=1)
    k: int | None = Field(default=None, ge=1, le=32)


class ChatCompletionRequest(SamplingFields):
    messages: list[MessageIn] = Field(min_length=1)
    documents: DocumentsIn | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: ResponseFormatIn | None = None
    tools: list[ToolIn] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    max_tokens: int | None = Field(default=16, ge=1)
    echo: bool = False
    best_of: int | None = Field(default=None, ge=1)


class EmbeddingsRequest(_Body):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
