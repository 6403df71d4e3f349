"""The usage ledger: requests and tokens per key, model and UTC day."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from garrison.store import Store


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Usage of one key for one model on one UTC day."""

    day: str
    key_id: str
    key_name: str | None
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}


class UsageLedger:
    """Adds up usage in the store, one row per (key, day, model)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def record(self, key_id: str, model: str, day: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Count one request and its tokens."""
        self._store.execute(
            "INSERT INTO usage_daily (key_id, day, model, requests, prompt_tokens, completion_tokens) "
            "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (key_id, day, model) DO UPDATE SET "
            "requests = usage_daily.requests + 1, "
            "prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, "
            "completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens",
            (key_id, day, model, prompt_tokens, completion_tokens),
        )

    def tokens_on(self, key_id: str, day: str) -> int:
        """Tokens (prompt + completion) a key used on a UTC day, over all models."""
        row = self._store.fetchone(
            "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage_daily "
            "WHERE key_id = ? AND day = ?",
            (key_id, day),
        )
        return int(row[0]) if row else 0

    def rows(
        self,
        *,
        key_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        env: str | None = None,
    ) -> list[UsageRow]:
        """Usage rows, newest day first, optionally for one key, a day range (`since` <= day < `until`) and
        the keys of one environment."""
        where, params = [], []
        filters = (("u.key_id = ?", key_id), ("u.day >= ?", since), ("u.day < ?", until), ("k.env = ?", env))
        for clause, value in filters:
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = (
            "SELECT u.day, u.key_id, k.name AS key_name, u.model, u.requests, u.prompt_tokens, "
            "u.completion_tokens FROM usage_daily u LEFT JOIN api_keys k ON k.id = u.key_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY u.day DESC, u.key_id, u.model"
        )
        return [UsageRow(**dict(row)) for row in self._store.fetchall(sql, params)]
