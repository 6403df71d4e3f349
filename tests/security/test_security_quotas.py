"""Quotas with a controllable clock: rpm and tpm token buckets, the daily budget, 429 with Retry-After."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from garrison.errors import RateLimited
from garrison.security import Security
from garrison.security.principal import Limits
from garrison.security.quotas import Quotas, TokenBucket


def _error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "rate_limit_error"
    return error


def test_token_bucket_refills_at_capacity_per_minute() -> None:
    bucket = TokenBucket(60, now=0.0)
    bucket.charge(60)
    assert bucket.wait_for(1) == 1.0  # 60/min refills one unit per second
    bucket.refill(0.5, 60)
    assert bucket.wait_for(1) == 0.5
    bucket.refill(100.0, 60)
    assert bucket.level == 60  # never above capacity
    bucket.charge(-30)
    assert bucket.level == 60  # refunds do not overfill
    assert bucket.wait_for(500) == 0.0  # asks beyond capacity need a full bucket, not the impossible


def test_over_rpm_is_429_with_retry_after(
    chat: Callable[..., httpx.Response], new_key: Callable[..., str], clock: Any
) -> None:
    token = new_key(limits=Limits(rpm=2))
    assert chat(token).status_code == 200
    assert chat(token).status_code == 200
    response = chat(token)
    error = _error(response)
    assert error["message"].startswith("key exceeded its requests-per-minute limit (2 rpm)")
    assert error["code"] == "rpm_limit_exceeded"
    assert response.headers["retry-after"] == "30"  # one request refills in 60/2 seconds
    clock.advance(30)
    assert chat(token).status_code == 200


def test_over_tpm_is_429_and_actual_tokens_are_charged(
    chat: Callable[..., httpx.Response], new_key: Callable[..., str], clock: Any
) -> None:
    token = new_key(limits=Limits(tpm=600))  # refills 10 tokens per second
    # estimate 6 + 100, actual 7 + 5 = 12: the reservation is settled to the actual count
    for _ in range(5):
        assert chat(token, max_tokens=100).status_code == 200
    # 600 - 5*12 = 540 left: an estimate of 6 + 544 = 550 must wait 1 second
    response = chat(token, max_tokens=544)
    error = _error(response)
    assert error["message"].startswith("key exceeded its tokens-per-minute limit (600 tpm)")
    assert response.headers["retry-after"] == "1"
    clock.advance(1)
    assert chat(token, max_tokens=544).status_code == 200


def test_tokens_beyond_the_estimate_are_charged_but_never_past_the_limit(
    chat: Callable[..., httpx.Response], new_key: Callable[..., str], clock: Any
) -> None:
    token = new_key(limits=Limits(tpm=60))  # one token per second
    # "ping" is estimated at 6 prompt tokens; the engine counts 50, and max_tokens caps the completion at 1
    assert chat(token, max_tokens=1, prompt_tokens=50, completion_tokens=40).status_code == 200  # 51 used
    response = chat(token, max_tokens=10)  # asks 6 + 10, the bucket holds 9
    _error(response)
    assert response.headers["retry-after"] == "7"
    clock.advance(7)
    assert chat(token, max_tokens=10).status_code == 200


def test_over_daily_budget_is_429_until_midnight_utc(
    chat: Callable[..., httpx.Response], new_key: Callable[..., str], clock: Any
) -> None:
    token = new_key(limits=Limits(daily_tokens=30))
    assert chat(token, max_tokens=5).status_code == 200  # 12 used
    assert chat(token, max_tokens=5).status_code == 200  # 24 used
    response = chat(token, max_tokens=10)  # 24 + 10 > 30
    error = _error(response)
    assert error["message"].startswith("key exhausted its daily token budget (30 tokens/day, 24 used today")
    assert error["code"] == "daily_budget_exceeded"
    seconds_to_midnight = 86400 - clock() % 86400
    assert abs(int(response.headers["retry-after"]) - seconds_to_midnight) <= 1
    clock.advance(seconds_to_midnight + 1)
    assert chat(token, max_tokens=10).status_code == 200


def test_daily_budget_survives_a_restart(security: Security, new_key: Callable[..., str]) -> None:
    token = new_key(limits=Limits(daily_tokens=100))
    principal = security.guard.authenticate(f"Bearer {token}")
    grant = security.guard.admit(principal, 10)
    security.guard.record_usage(principal, "tiny", 60, 30, grant=grant)
    fresh = Quotas(security.store, security.usage, security.guard.clock)  # what a restarted server starts with
    with pytest.raises(RateLimited, match=r"\(100 tokens/day, 90 used today"):
        fresh.admit(principal, 20)
    fresh.admit(principal, 10)  # exactly the rest of the budget still fits


def test_denied_requests_consume_nothing(
    chat: Callable[..., httpx.Response], new_key: Callable[..., str]
) -> None:
    token = new_key(limits=Limits(rpm=1), models=["tiny"])
    assert chat(token, model="big").status_code == 403  # denied before admission
    assert chat(token).status_code == 200
    assert chat(token).status_code == 429


def test_usage_is_recorded_per_key_model_and_day(
    chat: Callable[..., httpx.Response], new_key: Callable[..., str], security: Security
) -> None:
    token = new_key(name="alice")
    chat(token, model="tiny")
    chat(token, model="tiny", prompt_tokens=10, completion_tokens=20)
    chat(token, model="other")
    rows = {r.model: r for r in security.usage.rows()}
    assert rows["tiny"].requests == 2
    assert (rows["tiny"].prompt_tokens, rows["tiny"].completion_tokens) == (17, 25)
    assert rows["other"].total_tokens == 12
    assert rows["tiny"].key_name == "alice"
    assert rows["tiny"].day == "2025-06-15"
