"""GET /metrics: Prometheus exposition of each model's admission and engine load (`metrics` scope).

The values are read from the live service at scrape time (a custom collector over a registry owned by
the app), so nothing is counted twice and no module-level registry exists.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from garrison.api.access import authorize
from garrison.guard.stage import GuardStage
from garrison.guard.verdicts import GuardCollector
from garrison.service import InferenceService

router = APIRouter(tags=["metrics"])

# engine.metrics() key -> (metric name, help, counter?)
_ENGINE_METRICS: dict[str, tuple[str, str, bool]] = {
    "slots": ("garrison_engine_slots", "Sequence slots (KV streams) of the engine.", False),
    "running": ("garrison_engine_sequences_running", "Sequences prefilling or decoding.", False),
    "waiting": ("garrison_engine_sequences_waiting", "Sequences queued in the engine for a slot.", False),
    "requests_total": ("garrison_engine_sequences_admitted", "Sequences admitted to a slot.", True),
    "tokens_prefilled_total": ("garrison_engine_prompt_tokens", "Prompt tokens computed (not cached).", True),
    "tokens_generated_total": ("garrison_engine_generation_tokens", "Tokens sampled.", True),
    "kv_cells_used": ("garrison_engine_kv_cells_used", "KV cells holding a token (running, cached).", False),
    "kv_cells_total": ("garrison_engine_kv_cells", "KV cells allocated.", False),
    "prefix_cache_hits_total": ("garrison_engine_prefix_cache_hits", "Admissions reusing a prefix.", True),
    "prefix_cache_tokens_total": (
        "garrison_engine_prefix_cache_tokens", "Prompt tokens taken from the prefix cache.", True
    ),
    "decode_steps_total": ("garrison_engine_decode_steps", "Decode steps run.", True),
    "padded_steps_total": (
        "garrison_engine_padded_steps", "Lone one-token steps given a padding row to keep results exact.", True
    ),
    "threads": ("garrison_engine_threads", "llama.cpp threads the engine's steps use now.", False),
    "thread_switches_total": (
        "garrison_engine_thread_switches", "Changes of the thread count by measured CPU contention.", True
    ),
    "healthy": ("garrison_engine_healthy", "1 while the engine's decode loop serves, 0 while it cannot.", False),
    "loop_restarts_total": (
        "garrison_engine_loop_restarts", "Decode steps that failed (their requests failed, the loop went on).", True
    ),
}
_SECONDS: dict[str, tuple[str, str]] = {
    "step_ns_total": ("garrison_engine_step_seconds", "Decode-thread time in scheduling steps."),
    "decode_ns_total": ("garrison_engine_decode_seconds", "Decode-thread time inside llama_decode."),
    "sample_ns_total": ("garrison_engine_sample_seconds", "Decode-thread time inside samplers."),
}


class ServiceCollector(Collector):
    """Reads every model's admission state and, where the engine has them, its scheduler metrics."""

    def __init__(self, service: InferenceService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            "garrison_requests_in_flight", "Requests running or queued for the model.", labels=["model"]
        )
        limit = GaugeMetricFamily(
            "garrison_requests_limit", "Requests the model holds before answering 503.", labels=["model"]
        )
        for model_id, load in self._service.load_state().items():
            in_flight.add_metric([model_id], load["in_flight"])
            limit.add_metric([model_id], load["limit"])
        yield in_flight
        yield limit
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for key, (name, text, counter) in _ENGINE_METRICS.items():
            kind = CounterMetricFamily if counter else GaugeMetricFamily
            families[key] = kind(name, text, labels=["model"])
        for key, (name, text) in _SECONDS.items():
            families[key] = CounterMetricFamily(name, text, labels=["model"])
        for model_id, values in self._service.engine_metrics().items():
            for key, value in values.items():
                found = families.get(key)
                if found is not None:
                    found.add_metric([model_id], value / 1e9 if key in _SECONDS else value)
        yield from families.values()


def metrics_registry(service: InferenceService) -> CollectorRegistry:
    """A registry of this app's own: the service and guardrail collectors (no process-global registry)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service))
    for stage in service.stages:
        if isinstance(stage, GuardStage):
            registry.register(GuardCollector(stage.guardrails))
    return registry


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format; needs a key with the `metrics` (or `admin`) scope."""
    await authorize(request, "metrics")
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
