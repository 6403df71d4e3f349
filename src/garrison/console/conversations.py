"""Conversations kept per user: the console's chat history, deletable by its owner."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from garrison.errors import NotFound
from garrison.store import Store
from garrison.store.times import Clock, from_iso, to_iso


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str
    created_at: float
    citations: list[dict[str, Any]] = field(default_factory=list)
    label: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    user_id: str
    title: str
    model: str
    created_at: float
    updated_at: float


class ConversationStore:
    """Conversations and their messages; every read and write is scoped to the owning user."""

    def __init__(self, store: Store, clock: Clock = time.time) -> None:
        self._store = store
        self._clock = clock

    def start(self, user_id: str, model: str, first_message: str) -> Conversation:
        now = to_iso(self._clock())
        conv_id = secrets.token_hex(8)
        title = " ".join(first_message.split())[:60] or "New conversation"
        self._store.execute(
            "INSERT INTO conversations (id, user_id, title, model, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (conv_id, user_id, title, model, now, now),
        )
        return self.get(user_id, conv_id)

    def get(self, user_id: str, conv_id: str) -> Conversation:
        """A conversation of this user (404 for anyone else's: its existence is not revealed)."""
        row = self._store.fetchone("SELECT * FROM conversations WHERE id = ? AND user_id = ?", (conv_id, user_id))
        if row is None:
            raise NotFound(f"no conversation '{conv_id}'", param="conversation")
        return _conversation(row)

    def of_user(self, user_id: str, limit: int = 100) -> list[Conversation]:
        rows = self._store.fetchall(
            "SELECT * FROM conversations WHERE user_id = ? ORDER BY updated_at DESC, id LIMIT ?", (user_id, limit)
        )
        return [_conversation(r) for r in rows]

    def messages(self, user_id: str, conv_id: str) -> list[Message]:
        self.get(user_id, conv_id)
        rows = self._store.fetchall(
            "SELECT * FROM conversation_messages WHERE conversation_id = ? ORDER BY id", (conv_id,)
        )
        return [
            Message(
                role=r["role"], content=r["content"], created_at=from_iso(r["created_at"]),
                citations=json.loads(r["citations"]) if r["citations"] else [], label=r["label"],
                request_id=r["request_id"],
            )
            for r in rows
        ]

    def add(
        self, user_id: str, conv_id: str, role: str, content: str, *, citations: list[dict[str, Any]] | None = None,
        label: str | None = None, request_id: str | None = None,
    ) -> None:
        self.get(user_id, conv_id)
        now = to_iso(self._clock())
        with self._store.transaction() as conn:
            conn.execute(
                "INSERT INTO conversation_messages (conversation_id, role, content, citations, label, request_id, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conv_id, role, content, json.dumps(citations) if citations else None, label, request_id, now),
            )
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conv_id))

    def delete(self, user_id: str, conv_id: str) -> None:
        self.get(user_id, conv_id)
        with self._store.transaction() as conn:
            conn.execute("DELETE FROM conversation_messages WHERE conversation_id = ?", (conv_id,))
            conn.execute("DELETE FROM conversations WHERE id = ? AND user_id = ?", (conv_id, user_id))


def _conversation(row: Any) -> Conversation:
    return Conversation(
        id=row["id"], user_id=row["user_id"], title=row["title"], model=row["model"],
        created_at=from_iso(row["created_at"]), updated_at=from_iso(row["updated_at"]),
    )
