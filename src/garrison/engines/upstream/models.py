"""The `openai`, `ollama` and `garrison` engines in the engine registry: `[[models]]` entries in, engines out."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError

from garrison.engines.base import Embedder, Engine
from garrison.engines.upstream.config import UpstreamModelConfig
from garrison.engines.upstream.engine import UpstreamEngine, create_engine
from garrison.errors import ConfigError
from garrison.registry import ModelInfo
from garrison.settings import ModelConfig, Settings


def upstream_config(config: ModelConfig) -> UpstreamModelConfig:
    """The upstream fields of a `[[models]]` entry, checked (ConfigError naming the model and the field)."""
    fields = {**config.model_dump(exclude_unset=True), **(config.model_extra or {})}
    try:
        return UpstreamModelConfig.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"model '{config.id}' (engine {config.engine}): {problems}") from None


def describe_upstream_model(config: ModelConfig, settings: Settings) -> ModelInfo:
    """The model loader: a remote model behind the engine-neutral ModelInfo (nothing is contacted here)."""
    upstream = upstream_config(config)
    return ModelInfo(
        id=upstream.id,
        kind=upstream.kind,
        engine=upstream.engine,
        context_length=upstream.context_length or 0,
        capabilities=frozenset(upstream.capabilities or ()),
        trust=upstream.trust,
        details=upstream,
        format="remote",
        digest=upstream.revision or "",
        quantization="remote",
        metadata={"upstream_model": upstream.remote_name, "upstreams": list(upstream.upstreams)},
    )


def create_engines(models: list[ModelInfo], settings: Settings) -> dict[str, Engine | Embedder]:
    """One routed, pooled engine per remote model (its key is read from `api_key_env` now)."""
    built: dict[str, Engine | Embedder] = {}
    for info in models:
        assert isinstance(info.details, UpstreamModelConfig)
        built[info.id] = create_engine(info.details, settings)
    return built


_PUBLIC = ("url", "state", "outstanding", "ejected_for_s")


def upstream_of(engine: object, *, public: bool = False) -> dict[str, Any] | None:
    """The replica state of a model's engine (None if it is not remote); `public` leaves out failure reasons
    and revisions, for the unauthenticated /health."""
    if not isinstance(engine, UpstreamEngine):
        return None
    state = engine.describe()
    if public:
        state["replicas"] = [{k: r[k] for k in _PUBLIC if k in r} for r in state["replicas"]]
        state.pop("revision", None)
    return state


def probe_models(models: list[ModelInfo], settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """Probe every replica of each remote model once, outside a server (`garrison models list`)."""
    engines = {m.id: create_engine(m.details, settings) for m in models if isinstance(m.details, UpstreamModelConfig)}

    async def probe() -> dict[str, dict[str, Any]]:
        try:
            states = await asyncio.gather(*(engine.probe() for engine in engines.values()))
            return dict(zip(engines, states, strict=True))
        finally:
            for engine in engines.values():
                await engine.aclose()

    return asyncio.run(probe()) if engines else {}
