"""Apply a policy's rules to one text: the redacted text, a verdict per rule that fired, the blocking rule."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from garrison.errors import PolicyViolation
from garrison.guard import pii, secrets
from garrison.guard.injection import screen
from garrison.guard.redact import Vault, redact
from garrison.guard.spans import Detector, Span, scan
from garrison.settings import GuardPolicy, GuardrailSettings, GuardRule, GuardWhere


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one rule found in one place: span types and counts or an injection score; never the originals."""

    rule: str
    what: str
    where: str
    action: str
    spans: dict[str, int] = field(default_factory=dict)
    score: float | None = None
    signals: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "what": self.what, "where": self.where, "action": self.action}
        if self.spans:
            out["spans"] = dict(sorted(self.spans.items()))
        if self.score is not None:
            out["score"] = self.score
            out["signals"] = list(self.signals)
        return out


@dataclass(slots=True)
class Checked:
    """The outcome of a policy on one text."""

    text: str
    verdicts: list[Verdict]
    spans: list[Span]
    blocked_by: Verdict | None = None
    score: float | None = None


class Guardrails:
    """The detectors (built once) and the per-rule verdict counters /metrics reads."""

    def __init__(self, settings: GuardrailSettings | None = None) -> None:
        region = (settings or GuardrailSettings()).phone_region
        self.detectors: dict[str, list[Detector]] = {"pii": pii.detectors(region), "secrets": secrets.detectors()}
        self._counts: Counter[tuple[str, str, str, str]] = Counter()
        self._lock = threading.Lock()

    def rules_for(self, policy: GuardPolicy | None, where: GuardWhere) -> list[GuardRule]:
        return [r for r in policy.rules if where in r.where] if policy is not None else []

    def detectors_for(self, rule: GuardRule) -> list[Detector]:
        """The detectors a pii, secrets or blocklist rule runs (a blocklist is one built from its terms)."""
        if rule.what == "blocklist":
            terms = tuple(rule.terms)
            return [Detector("blocklist", ("BLOCKED",), lambda text: _blocklist(terms, text),
                             max(len(t) for t in terms), re.compile(r"\w*\Z"))]
        return self.detectors.get(rule.what, [])

    def types_for(self, rule: GuardRule) -> frozenset[str]:
        """The span types a rule reports."""
        if rule.types:
            return frozenset(rule.types)
        return frozenset(t for d in self.detectors_for(rule) for t in d.types)

    def check(
        self,
        text: str,
        policy: GuardPolicy | None,
        where: GuardWhere,
        vault: Vault | None = None,
        *,
        rehydrate: bool = False,
        count: bool = True,
        screen_injection: bool = True,
        only: Sequence[GuardRule] | None = None,
    ) -> Checked:
        """Run every rule of `policy` (or `only` these) for `where` over `text`; redact rules rewrite it."""
        vault = vault if vault is not None else Vault()
        result = Checked(text=text, verdicts=[], spans=[])
        for rule in only if only is not None else self.rules_for(policy, where):
            if rule.what == "injection" and not screen_injection:
                continue
            verdict = self._apply(rule, where, result, vault, rehydrate)
            if verdict is None:
                continue
            result.verdicts.append(verdict)
            if count:
                self.count(verdict, policy.name if policy else "-")
            if rule.action == "block" and result.blocked_by is None:
                result.blocked_by = verdict
        return result

    def enforce(self, checked: Checked) -> None:
        """Raise the policy's error when a blocking rule fired (400 naming the rule and where)."""
        if checked.blocked_by is not None:
            raise PolicyViolation(checked.blocked_by.rule, checked.blocked_by.where)

    def count(self, verdict: Verdict, policy: str) -> None:
        with self._lock:
            self._counts[(policy, verdict.rule, verdict.where, verdict.action)] += 1

    def counts(self) -> dict[tuple[str, str, str, str], int]:
        with self._lock:
            return dict(self._counts)

    def _apply(self, rule: GuardRule, where: str, result: Checked, vault: Vault, rehydrate: bool) -> Verdict | None:
        if rule.what == "injection":
            found = screen(result.text)
            result.score = max(result.score or 0.0, found.score)
            if found.score < rule.threshold:
                return None
            return Verdict(rule.label, rule.what, where, rule.action, score=found.score, signals=found.signals)
        spans = self.find(rule, result.text)
        if not spans:
            return None
        if rule.action == "redact":
            result.text = redact(result.text, spans, vault, rehydrate=rehydrate)
        result.spans.extend(spans)
        return Verdict(rule.label, rule.what, where, rule.action, spans=dict(Counter(s.type for s in spans)))

    def find(self, rule: GuardRule, text: str) -> list[Span]:
        """The spans one pii, secrets or blocklist rule matches in `text`."""
        types = frozenset(rule.types) if rule.types else None
        return scan(text, self.detectors_for(rule), types)


def _blocklist(terms: Sequence[str], text: str) -> Iterator[Span]:
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(t) for t in terms) + r")\b", re.IGNORECASE)
    for m in pattern.finditer(text):
        yield Span(m.start(), m.end(), "BLOCKED", m.group())


class GuardCollector(Collector):
    """/metrics: verdicts per policy, rule, place and action, read from the live counters at scrape time."""

    def __init__(self, guardrails: Guardrails) -> None:
        self._guardrails = guardrails

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "garrison_guard_verdicts", "Guardrail rules that fired.", labels=["policy", "rule", "where", "action"]
        )
        for labels, value in sorted(self._guardrails.counts().items()):
            family.add_metric(list(labels), value)
        yield family
