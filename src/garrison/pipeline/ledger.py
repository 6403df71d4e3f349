"""The pipeline's books: who may run what, what it reserved, and the audit records of its admission and end.

Everything here is synchronous store work (the service calls it in a worker thread); with no `Security`
(bare apps in unit tests) every check passes and nothing is recorded.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from garrison.audit.log import AuditEvent
from garrison.domain import EmbeddingRequest, FinishReason, GenerationRequest
from garrison.errors import AuditWriteError, GarrisonError, InvalidRequest, RateLimited
from garrison.security import Security
from garrison.security.outage import OFFLINE
from garrison.security.principal import CLEARANCES, Principal
from garrison.security.quotas import Grant
from garrison.store.times import seconds_until_next_day, utc_day

_DENIALS = (401, 403, 429)
# Tokens a chat template adds around each message (role markers, separators), for the estimate.
_PER_MESSAGE_TOKENS = 4
# The status an admitted record carries: the request is running, its outcome is in its finished record.
RUNNING = 102


def decision_for(status: int) -> str:
    """allow, deny (an access or quota decision: 401, 403, 429) or error (the request failed otherwise)."""
    if status in _DENIALS:
        return "deny"
    return "error" if status >= 400 else "allow"


def estimate_prompt_tokens(request: GenerationRequest | EmbeddingRequest) -> int:
    """The one estimate of a prompt's tokens before the engine counts them: 3 characters a token, plus
    the template's framing of each chat message."""
    if isinstance(request, EmbeddingRequest):
        return sum(math.ceil(len(text) / 3) for text in request.inputs)
    text = "".join(m.content for m in request.messages or []) + (request.prompt or "") + (request.suffix or "")
    return math.ceil(len(text) / 3) + _PER_MESSAGE_TOKENS * len(request.messages or [])


def prompt_record(request: GenerationRequest | EmbeddingRequest) -> str:
    """What was asked, as canonical JSON: messages keep their roles and boundaries, so the audit hash of
    ["a\\nb"] differs from that of ["a", "b"]."""
    value: Any
    if isinstance(request, EmbeddingRequest):
        value = {"input": request.inputs}
    elif request.messages is not None:
        value = {"messages": [{"role": m.role, "content": m.content} for m in request.messages]}
    else:
        value = {"prompt": request.prompt or ""}
        if request.suffix is not None:
            value["suffix"] = request.suffix
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(slots=True)
class Origin:
    """Where a request came from, for its audit records; the HTTP layer fills it in."""

    request_id: str
    method: str = "CALL"
    route: str = "-"
    client: str | None = None
    client_request_id: str | None = None  # the caller's own x-request-id, never our id
    streaming: bool = False
    started_ns: int = field(default_factory=time.perf_counter_ns)
    records: int = 0  # audit records the pipeline wrote for this request (the HTTP layer then writes none)

    def latency_ms(self) -> float:
        return (time.perf_counter_ns() - self.started_ns) / 1e6


@dataclass(slots=True)
class Ticket:
    """An admitted request: its caller, what it reserved, and how much it may use."""

    origin: Origin
    caller: Principal
    model: str
    prompt_text: str
    annotations: dict[str, Any]
    grant: Grant | None = None
    finished: bool = False
    asked: int | None = None  # the completion tokens the request asked for (None: up to the context)

    @property
    def limit(self) -> int | None:
        """Most tokens (prompt + completion) the key's limits leave this request; None: no limit."""
        return self.grant.limit if self.grant is not None else None

    def over_limit(self, prompt_tokens: int, now: float) -> RateLimited:
        """The refusal of a request whose counted prompt leaves no room under its key's limit."""
        daily = self.caller.limits.daily_tokens is not None
        return RateLimited(
            f"this request's prompt is {prompt_tokens} tokens; its key has {self.limit} tokens left "
            + ("today (daily budget)" if daily else "this minute (tokens-per-minute limit)"),
            retry_after=seconds_until_next_day(now) if daily else 60.0,
            code="daily_budget_exceeded" if daily else "tpm_limit_exceeded",
        )


@dataclass(slots=True)
class Outcome:
    """How an admitted request ended: tokens actually prompted and generated, and any error."""

    prompt_tokens: int
    completion_tokens: int
    status: int = 200
    error: GarrisonError | None = None
    reason: str | None = None
    finish_reason: FinishReason | None = None
    response_text: str | None = None


class _Queued(Exception):
    """Records wait in the outage spool: this one must queue behind them."""


class Ledger:
    """Authorization, quota admission and settlement, and audit records, all from domain facts."""

    def __init__(self, security: Security | None) -> None:
        self.security = security

    @property
    def checks_keys(self) -> bool:
        return self.security is not None and self.security.auth_enabled

    def anonymous(self) -> Principal:
        """The caller when auth is disabled."""
        return Principal.anonymous(self.security.env if self.security is not None else "dev")

    def authorize(self, caller: Principal, scope: str, model: str) -> None:
        """May `caller` use `scope` on `model`? PermissionDenied if not."""
        if self.security is not None and not caller.is_anonymous:
            self.security.guard.authorize(caller, scope, model)

    def clear(self, caller: Principal, data_label: str | None) -> None:
        """Is `caller` cleared for data labelled `data_label` (set by the caller or a stage)?"""
        if data_label is not None and data_label not in CLEARANCES:
            raise InvalidRequest(f"data label {data_label!r} is none of {', '.join(CLEARANCES)}", param="data_label")
        if self.security is not None and not caller.is_anonymous and data_label is not None:
            self.security.guard.authorize(caller, None, None, clearance=data_label)

    def admit(
        self,
        origin: Origin,
        caller: Principal,
        model: str,
        request: GenerationRequest | EmbeddingRequest,
        completion_tokens: int,
        *,
        open_ended: bool = False,
        estimate: int | None = None,
    ) -> Ticket:
        """Reserve the request's tokens and write its `request.admitted` record, atomically: durable before the
        engine runs, or (`audit.durability = "answer"`) with the request's end, before its answer.

        RateLimited when over a limit (recorded as a denial); AuditWriteError when the record cannot be
        made durable (then nothing is reserved).
        """
        ticket = Ticket(origin, caller, model, prompt_record(request), dict(request.annotations))
        security = self.security
        if security is None:
            return ticket
        prompt = estimate if estimate is not None else estimate_prompt_tokens(request)  # the caller may know it
        try:
            if not security.audit.ready():  # records queued in an outage go first: this one joins them
                return self._admit_offline(ticket, request, completion_tokens, open_ended, prompt)
            with security.audit.transaction(durable=False):  # durable now, or with its end (durability 'answer')
                if not caller.is_anonymous:
                    ticket.grant = security.guard.admit(caller, prompt, completion_tokens, open_ended=open_ended)
                if ticket.grant is not None and ticket.grant.via not in ("store", "redis"):
                    ticket.annotations["limits"] = ticket.grant.via  # degraded: shared limits unreachable
                details = dict(ticket.annotations)
                if ticket.grant is not None and ticket.grant.reserved:
                    details["reserved_tokens"] = ticket.grant.reserved
                security.audit.append(self._event(ticket, "request.admitted", RUNNING, details=details))
        except RateLimited as exc:
            self.refuse(origin, caller, model, request, exc)
            raise
        except AuditWriteError as exc:
            if not security.store_outage(exc):
                raise
            return self._admit_offline(ticket, request, completion_tokens, open_ended, prompt)
        origin.records += 1
        return ticket

    def _admit_offline(
        self, ticket: Ticket, request: GenerationRequest | EmbeddingRequest, completion_tokens: int, open_ended: bool,
        prompt: int,
    ) -> Ticket:
        """Admission while the shared store is unreachable: memory or Redis buckets, the record queued on disk."""
        security, caller = self.security, ticket.caller
        assert security is not None and security.offline is not None
        ticket.annotations["store"] = OFFLINE
        try:
            if not caller.is_anonymous:
                ticket.grant = security.offline.admit(caller, prompt, completion_tokens, open_ended=open_ended)
        except GarrisonError as exc:  # RateLimited, or StoreUnavailable for a daily budget
            self.refuse(ticket.origin, caller, ticket.model, request, exc)
            raise
        details = dict(ticket.annotations)
        if ticket.grant is not None and ticket.grant.reserved:
            details["reserved_tokens"] = ticket.grant.reserved
        security.audit.append(self._event(ticket, "request.admitted", RUNNING, details=details))
        ticket.origin.records += 1
        return ticket

    def now(self) -> float:
        """The security clock (tests move it), else the wall clock."""
        return self.security.guard.clock() if self.security is not None else time.time()

    def extend(self, ticket: Ticket, want: int) -> int | None:
        """Grow the ticket's grant toward `want` tokens where the key's limits allow; its new limit."""
        if self.security is not None and ticket.grant is not None:
            ticket.grant = self.security.guard.quotas.extend(ticket.caller, ticket.grant, want)
        return ticket.limit

    def refuse(
        self,
        origin: Origin,
        caller: Principal,
        model: str | None,
        request: GenerationRequest | EmbeddingRequest,
        exc: GarrisonError,
    ) -> None:
        """Record a request the pipeline refused before admission (403, 404, 429, a stage's refusal)."""
        if self.security is None:
            return
        ticket = Ticket(origin, caller, model or "", prompt_record(request), dict(request.annotations))
        event = self._event(  # a stage's verdicts (why a guard refused it) stay on the record
            ticket, "request", exc.status, error=exc, reason=exc.message, details=ticket.annotations
        )
        event.model = model
        self.security.audit.append(event)
        origin.records += 1

    def finish(self, ticket: Ticket, outcome: Outcome) -> None:
        """Settle the actual tokens and write `request.finished`, in one transaction (once)."""
        if ticket.finished:
            return
        ticket.finished = True
        security = self.security
        if security is None:
            return
        details = dict(ticket.annotations)
        if outcome.finish_reason is not None:
            details["finish_reason"] = outcome.finish_reason
        event = self._event(
            ticket, "request.finished", outcome.status, error=outcome.error, reason=outcome.reason,
            details=details, response_text=outcome.response_text,
        )
        event.prompt_tokens, event.completion_tokens = outcome.prompt_tokens, outcome.completion_tokens
        try:
            if not security.audit.ready():
                raise _Queued
            with security.audit.transaction():
                if ticket.grant is not None:
                    security.guard.record_usage(
                        ticket.caller, ticket.model, outcome.prompt_tokens, outcome.completion_tokens,
                        grant=ticket.grant,
                    )
                security.audit.append(event)
        except (AuditWriteError, _Queued) as exc:
            if isinstance(exc, AuditWriteError) and not security.store_outage(exc):
                raise
            assert security.offline is not None
            usage = None
            if ticket.grant is not None:  # settled in its buckets now; its usage row comes with the record
                security.offline.settle(ticket.caller, ticket.grant, outcome.prompt_tokens, outcome.completion_tokens)
                usage = (ticket.caller.key_id, ticket.model, utc_day(self.now()), outcome.prompt_tokens,
                         outcome.completion_tokens)
            if event.details is None or "store" not in event.details:
                event.details = {**(event.details or {}), "store": OFFLINE}
            security.audit.append(event, usage=usage)
        ticket.origin.records += 1

    def _event(
        self,
        ticket: Ticket,
        kind: str,
        status: int,
        *,
        error: GarrisonError | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        response_text: str | None = None,
    ) -> AuditEvent:
        origin, caller = ticket.origin, ticket.caller
        if reason is None and (self.security is None or not self.security.auth_enabled):
            reason = "auth disabled"
        if caller.delegation is not None:  # forwarded by a peer gateway: link its request (federation.py)
            details = {**(details or {}), "federation": caller.delegation.audit()}
        return AuditEvent(
            request_id=origin.request_id,
            method=origin.method,
            route=origin.route,
            status=status,
            decision=decision_for(status),
            reason=reason,
            key_id=None if caller.is_anonymous else caller.key_id,
            key_name=None if caller.is_anonymous else caller.name,
            client=origin.client,
            model=ticket.model or None,
            latency_ms=origin.latency_ms(),
            prompt_text=ticket.prompt_text,
            response_text=response_text,
            event=kind,
            client_request_id=origin.client_request_id,
            error_code=(error.code or error.type) if error is not None else None,
            details=details or None,
        )
