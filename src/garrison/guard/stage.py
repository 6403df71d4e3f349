"""The guard stage: screens and redacts a request's input before the engine, and its output stream after.

`before` applies the request's policy to every message (injection is screened in user and tool messages,
not in the operator's system prompt), records the verdicts in `request.annotations["guard"]` and raises
PolicyViolation when a blocking rule fires. `after` redacts the answer while it streams and puts the
caller's own values back in place of their placeholders when the policy rehydrates. `screen_retrieved`
is what the retrieval stage calls on document text (indirect injection, redaction of retrieved data), and
`screen_search` what the documents search API calls on its hits. `before_embed` applies the `input` rules to
embedding inputs (a block refuses; redaction changes the text that is embedded).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, assert_never

from garrison.domain import (
    ChatMessage,
    Citations,
    EmbeddingRequest,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    GenerationStarted,
    TokenDelta,
    ToolCallEvent,
)
from garrison.errors import PolicyViolation
from garrison.guard.egress import EgressStage
from garrison.guard.policies import Policies
from garrison.guard.redact import StreamRedactor, StreamRehydrator, Vault
from garrison.guard.spans import Span
from garrison.guard.verdicts import Checked, Guardrails, Verdict
from garrison.pipeline.stages import Stage
from garrison.settings import GuardPolicy, GuardRule, Settings

_SCREENED_ROLES = frozenset({"user", "tool"})
_MAX_STATES = 4096  # requests between before() and after(); older ones are forgotten
_SEVERITY = {"flag": 0, "redact": 1, "block": 2}


@dataclass(slots=True)
class _RequestState:
    policy: GuardPolicy
    vault: Vault = field(default_factory=Vault)


class GuardStage:
    """Guardrails as a pipeline stage (name 'guard')."""

    name = "guard"

    def __init__(self, policies: Policies, guardrails: Guardrails, env: str) -> None:
        self.policies = policies
        self.guardrails = guardrails
        self.env = env
        self._states: OrderedDict[str, _RequestState] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> GuardStage:
        return cls(Policies(settings.guardrails), Guardrails(settings.guardrails), settings.auth.env)

    def policy_for(self, request: GenerationRequest | EmbeddingRequest, caller: Any) -> GuardPolicy | None:
        """The caller key's policy (or the environment's default), together with the model's."""
        return self.policies.for_request(self.env, getattr(caller, "policy", None), request.model)

    async def before(self, request: GenerationRequest, caller: Any) -> GenerationRequest:
        state = self._state(request, caller)
        if state is None:
            return request
        policy, vault = state.policy, state.vault
        results: list[Checked] = []
        self._annotate(request, policy, [])  # the policy is on record even when no rule fires

        def guard(text: str, *, screen: bool = True) -> str:
            checked = self.guardrails.check(
                text, policy, "input", vault, rehydrate=policy.rehydrate, screen_injection=screen
            )
            results.append(checked)
            return checked.text

        messages = None
        if request.messages is not None:
            messages = [
                ChatMessage(m.role, guard(m.content, screen=m.role in _SCREENED_ROLES)) for m in request.messages
            ]
        prompt = guard(request.prompt) if request.prompt is not None else None
        suffix = guard(request.suffix) if request.suffix is not None else None
        self._annotate(request, policy, [v for r in results for v in r.verdicts])
        try:
            for checked in results:
                self.guardrails.enforce(checked)
        except PolicyViolation:
            self._states.pop(request.request_id, None)  # refused: no after() will come for it
            raise
        return replace(request, messages=messages, prompt=prompt, suffix=suffix)

    def screen_retrieved(self, request: GenerationRequest, caller: Any, text: str) -> str:
        """Document text on its way into the prompt: redacted and screened by the policy's `retrieved` rules.

        Retrieved values are never rehydrated (the caller did not supply them); a blocking rule raises.
        """
        state = self._state(request, caller)
        if state is None:
            return text
        checked = self.guardrails.check(text, state.policy, "retrieved", state.vault)
        self._annotate(request, state.policy, checked.verdicts)
        self.guardrails.enforce(checked)
        return checked.text

    async def before_embed(self, request: EmbeddingRequest, caller: Any) -> EmbeddingRequest:
        """Embedding inputs under the policy's `input` rules: every input is the caller's own text.

        Injection is screened in each input, a blocking rule refuses (400), and a redact rule changes the
        text that is embedded: the vector is of `[EMAIL_1]`, never of the address. Nothing is rehydrated
        (a vector has no text to put values back into).
        """
        policy = self.policy_for(request, caller)
        if policy is None:
            return request
        vault = Vault()
        results = [self.guardrails.check(text, policy, "input", vault) for text in request.inputs]
        _annotate(request.annotations, policy, [v for r in results for v in r.verdicts])
        for checked in results:
            self.guardrails.enforce(checked)
        request.inputs = [checked.text for checked in results]
        return request

    def screen_search(self, caller: Any, texts: list[str], annotations: dict[str, Any]) -> list[str]:
        """Documents search hits under the caller's policy's `retrieved` rules, as retrieval for a prompt.

        The verdicts go into `annotations["guard"]` (the search's audit record) before a blocking rule
        raises; hits are redacted with one vault, so a value has one placeholder across the hits.
        """
        policy = self.policies.for_request(self.env, getattr(caller, "policy", None), None)
        if policy is None:
            return texts
        vault = Vault()
        results = [self.guardrails.check(text, policy, "retrieved", vault) for text in texts]
        _annotate(annotations, policy, [v for r in results for v in r.verdicts])
        for checked in results:
            self.guardrails.enforce(checked)
        return [checked.text for checked in results]

    async def after(
        self, request: GenerationRequest, caller: Any, events: AsyncIterator[GenerationEvent]
    ) -> AsyncIterator[GenerationEvent]:
        state = self._states.pop(request.request_id, None)
        rules = self.guardrails.rules_for(state.policy, "output") if state is not None else []
        rehydrate = state is not None and state.policy.rehydrate
        if state is None or not (rules or rehydrate):
            async for event in events:
                yield event
            return
        output = _OutputGuard(self.guardrails, state, rules)
        annotated = False
        try:
            async for event in events:
                match event:
                    case GenerationStarted():
                        yield event
                    case TokenDelta():
                        piece = output.feed(event.text, event.tokens)
                        if piece is not None:
                            yield piece
                    case GenerationDone():
                        piece = output.finish()
                        # the request's end is recorded when GenerationDone arrives: verdicts go in first
                        self._annotate(request, state.policy, output.verdicts())
                        annotated = True
                        if piece is not None:
                            yield piece
                        yield event
                    case Citations():  # their quotes were screened as retrieved text on the way in
                        yield event
                    case ToolCallEvent():
                        yield self._guard_call(request, state, event)
                    case _:
                        assert_never(event)
        finally:
            if not annotated:
                self._annotate(request, state.policy, output.verdicts())

    def _guard_call(self, request: GenerationRequest, state: _RequestState, event: ToolCallEvent) -> ToolCallEvent:
        """A tool call's arguments pass the output rules as one piece (placeholders restored when rehydrating)."""
        checked = self.guardrails.check(event.call.arguments, state.policy, "output", state.vault)
        self._annotate(request, state.policy, checked.verdicts)
        self.guardrails.enforce(checked)
        arguments = state.vault.rehydrate(checked.text) if state.policy.rehydrate else checked.text
        return replace(event, call=replace(event.call, arguments=arguments))

    def _state(self, request: GenerationRequest, caller: Any) -> _RequestState | None:
        state = self._states.get(request.request_id)
        if state is None:
            policy = self.policy_for(request, caller)
            if policy is None:
                return None
            state = _RequestState(policy)
            self._states[request.request_id] = state
            while len(self._states) > _MAX_STATES:
                self._states.popitem(last=False)
        return state

    def _annotate(self, request: GenerationRequest, policy: GuardPolicy, verdicts: list[Verdict]) -> None:
        _annotate(request.annotations, policy, verdicts)


def _annotate(annotations: dict[str, Any], policy: GuardPolicy, verdicts: list[Verdict]) -> None:
    """Add verdicts (merged per rule and place) to a request's audit annotations; never originals."""
    entry = annotations.setdefault("guard", {"policy": policy.name, "verdicts": []})
    merged: dict[tuple[str, str], dict[str, Any]] = {(v["rule"], v["where"]): v for v in entry["verdicts"]}
    for verdict in verdicts:
        key = (verdict.rule, verdict.where)
        new = verdict.to_dict()
        old = merged.get(key)
        if old is None:
            merged[key] = new
            continue
        spans = Counter(old.get("spans", {})) + Counter(new.get("spans", {}))
        if spans:
            old["spans"] = dict(sorted(spans.items()))
        if "score" in new and new["score"] > old.get("score", -1.0):
            old["score"], old["signals"] = new["score"], new["signals"]
    entry["verdicts"] = list(merged.values())


class _OutputGuard:
    """One answer stream under a policy's output rules: redact, flag or block spans; rehydrate; screen."""

    def __init__(self, guardrails: Guardrails, state: _RequestState, rules: list[GuardRule]) -> None:
        self._guardrails = guardrails
        self._state = state
        self._span_rules: dict[str, GuardRule] = {}
        for rule in rules:
            if rule.what == "injection":
                continue
            for span_type in guardrails.types_for(rule):
                current = self._span_rules.get(span_type)
                if current is None or _SEVERITY[rule.action] > _SEVERITY[current.action]:
                    self._span_rules[span_type] = rule
        self._screen_rules = [r for r in rules if r.what == "injection"]
        detectors = {id(d): d for r in rules if r.what != "injection" for d in guardrails.detectors_for(r)}
        self._redactor = (
            StreamRedactor(list(detectors.values()), frozenset(self._span_rules), self._replace)
            if self._span_rules else None
        )
        self._rehydrator = StreamRehydrator(state.vault) if state.policy.rehydrate else None
        self._found: dict[str, Counter[str]] = {}
        self._fired: dict[str, GuardRule] = {}
        self._text: list[str] = []
        self._tokens = 0
        self._screened: list[Verdict] = []

    def feed(self, text: str, tokens: int) -> TokenDelta | None:
        self._tokens += tokens
        if self._screen_rules:
            self._text.append(text)
        if self._redactor is not None:
            text = self._redactor.feed(text)
        if self._rehydrator is not None:
            text = self._rehydrator.feed(text)
        return self._emit(text)

    def finish(self) -> TokenDelta | None:
        text = self._redactor.flush() if self._redactor is not None else ""
        if self._rehydrator is not None:
            text = self._rehydrator.feed(text) + self._rehydrator.flush()
        if self._screen_rules:
            checked = self._guardrails.check("".join(self._text), self._state.policy, "output", count=False,
                                             only=self._screen_rules)
            self._screened = checked.verdicts
            for verdict in checked.verdicts:
                self._guardrails.count(verdict, self._state.policy.name)
            self._guardrails.enforce(checked)
        return self._emit(text)

    def verdicts(self) -> list[Verdict]:
        out = [
            Verdict(rule.label, rule.what, "output", rule.action, spans=dict(self._found[rule.label]))
            for rule in self._fired.values()
        ]
        return out + self._screened

    def _emit(self, text: str) -> TokenDelta | None:
        if not text:
            return None
        piece = TokenDelta(text, self._tokens)
        self._tokens = 0
        return piece

    def _replace(self, span: Span) -> str:
        rule = self._span_rules[span.type]
        if rule.label not in self._fired:
            self._fired[rule.label] = rule
            self._found[rule.label] = Counter()
            self._guardrails.count(Verdict(rule.label, rule.what, "output", rule.action), self._state.policy.name)
        self._found[rule.label][span.type] += 1
        if rule.action == "block":
            raise PolicyViolation(rule.label, "output")
        if rule.action == "redact":
            return self._state.vault.placeholder(span, rehydrate=False)
        return span.value


def guard_of(stages: Sequence[object]) -> GuardStage | None:
    """The guard stage among a pipeline's stages (None: this server runs without one)."""
    return next((s for s in stages if isinstance(s, GuardStage)), None)


def guard_stages(settings: Settings, trust_of: Callable[[str], str]) -> list[Stage]:
    """The guardrail stages in pipeline order: guard (redact, screen), then egress (last, after any labelling)."""
    return [GuardStage.from_settings(settings), EgressStage(trust_of)]
