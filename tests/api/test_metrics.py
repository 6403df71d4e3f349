"""GET /metrics through the real server: Prometheus text, the metrics scope, engine counters that move."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.model

MODEL = "smollm2-135m-instruct"


def _scrape(live_server, key: str) -> dict[str, float]:
    response = httpx.get(f"{live_server.url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.labels.get("model") == MODEL:
                values[sample.name] = sample.value
    return values


def _key(live_server, scopes: list[str]) -> str:
    response = httpx.post(f"{live_server.url}/admin/keys", headers=live_server.headers, timeout=30,
                          json={"name": "metrics-test", "scopes": scopes})
    assert response.status_code == 201, response.text
    return response.json()["key"]


def test_metrics_needs_the_metrics_scope(live_server) -> None:
    assert httpx.get(f"{live_server.url}/metrics", timeout=30).status_code == 401
    chat_only = _key(live_server, ["chat"])
    denied = httpx.get(f"{live_server.url}/metrics", headers={"Authorization": f"Bearer {chat_only}"},
                       timeout=30)
    assert denied.status_code == 403
    assert "metrics" in denied.json()["error"]["message"]
    assert _scrape(live_server, _key(live_server, ["metrics"]))["garrison_engine_slots"] >= 1


def test_engine_counters_move_with_a_completion(live_server) -> None:
    before = _scrape(live_server, live_server.api_key)  # the admin key implies the metrics scope
    response = httpx.post(
        f"{live_server.url}/v1/completions", headers=live_server.headers, timeout=120,
        json={"model": MODEL, "prompt": "Counting up: one, two, three,", "max_tokens": 5, "temperature": 0},
    )
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    after = _scrape(live_server, live_server.api_key)
    def moved(name: str) -> float:
        return after[name] - before[name]

    assert moved("garrison_engine_generation_tokens_total") == usage["completion_tokens"]
    assert moved("garrison_engine_sequences_admitted_total") == 1
    assert after["garrison_engine_kv_cells"] >= after["garrison_engine_kv_cells_used"] > 0
    assert after["garrison_requests_in_flight"] == 0
    assert moved("garrison_engine_decode_seconds_total") > 0
