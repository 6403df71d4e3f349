"""Helpers for eval tests: a scripted OpenAI-compatible HTTP handler and case-result builders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from garrison.evals.checks import Verdict
from garrison.evals.results import CaseResult


@dataclass
class ScriptedOpenAI:
    """A fake chat-completions server: answers are looked up by prompt text; every request is recorded."""

    url: str = ""
    answers: dict[str, str] = field(default_factory=dict)
    default_answer: str = "I do not know."
    model: str = "scripted-model"
    requests: list[dict[str, Any]] = field(default_factory=list)

    def answer_for(self, body: dict[str, Any]) -> str:
        """The scripted answer for the last user message of a request."""
        prompt = body["messages"][-1]["content"]
        return self.answers.get(prompt, self.default_answer)


def make_handler(state: ScriptedOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Stay quiet."""

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": state.model, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(
                {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
            )
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": "not found"}})
                return
            answer = state.answer_for(body)
            self._send(
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 10,
                        "completion_tokens": len(answer.split()),
                        "total_tokens": 10,
                    },
                },
            )

    return Handler


def make_case(case_id: str, passed: bool, tags: tuple[str, ...] = (), answer: str = "") -> CaseResult:
    """A case result whose single check carries the verdict."""
    reason = "contains 'x'" if passed else "does not contain 'x'"
    return CaseResult(
        id=case_id,
        tags=tags,
        passed=passed,
        answer=answer or f"answer to {case_id}",
        checks=[Verdict("contains", passed, reason)],
        latency_s=0.5,
        prompt_tokens=10,
        completion_tokens=20,
        finish_reason="stop",
    )
