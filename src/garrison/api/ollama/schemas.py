"""Request bodies of Ollama's API, strict in types, lenient to fields garrison does not use."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from garrison.api.openai.schemas import DocumentsIn  # the same extension on both surfaces


class _Body(BaseModel):
    """Strict in types as the real APIs are ("5" is no integer, 1e309 no temperature); an int is a float."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


class Options(_Body):
    """Ollama's `options`: the runtime ones garrison honours; load-time ones (num_gpu, ...) are ignored."""

    num_predict: int | None = None
    num_ctx: int | None = None
    temperature: float | None = Field(default=None, ge=0.0)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    repeat_penalty: float | None = Field(default=None, gt=0.0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


Format = str | dict[str, Any] | None


class _Generative(_Body):
    model: str = Field(min_length=1)
    stream: bool | None = None
    format: Format = None
    options: Options | None = None
    keep_alive: float | str | None = None
    think: bool | str | None = None
    logprobs: bool | None = None

    @property
    def streaming(self) -> bool:
        """Ollama streams unless told `"stream": false`."""
        return self.stream is not False


class GenerateRequest(_Generative):
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool | None = None
    images: list[str] | None = None


class MessageIn(_Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    thinking: str | None = None
    tool_name: str | None = None


class ChatRequest(_Generative):
    messages: list[MessageIn] = Field(default_factory=list)
    documents: DocumentsIn | None = None
    tools: list[dict[str, Any]] | None = None


class EmbedRequest(_Body):
    model: str = Field(min_length=1)
    input: str | list[str] = ""
    truncate: bool | None = None
    dimensions: int | None = Field(default=None, ge=1)
    options: Options | None = None
    keep_alive: float | str | None = None


class EmbeddingsRequest(_Body):
    model: str = Field(min_length=1)
    prompt: str = ""
    options: Options | None = None
    keep_alive: float | str | None = None


class ShowRequest(_Body):
    """`model`, or the older `name` that some clients (Continue) still send."""

    model: str = ""
    name: str = ""
    verbose: bool = False

    @model_validator(mode="after")
    def _one_name(self) -> ShowRequest:
        if not (self.model or self.name):
            raise ValueError("model is required")
        return self

    @property
    def model_name(self) -> str:
        return self.model or self.name
