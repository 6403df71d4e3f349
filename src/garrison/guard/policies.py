"""Named guardrail policies: the built-ins, those in [[guardrails.policies]], and which one a request gets."""

from __future__ import annotations

from collections.abc import Iterable

from garrison.errors import ConfigError, PermissionDenied
from garrison.settings import GuardPolicy, GuardrailSettings, GuardRule

BUILTIN_POLICIES: tuple[GuardPolicy, ...] = (
    GuardPolicy(
        name="prod",
        rules=[
            GuardRule(what="secrets", where=["input", "output"], action="redact"),
            GuardRule(what="injection", where=["input"], action="block"),
        ],
    ),
    GuardPolicy(
        name="strict",
        rehydrate=True,
        rules=[
            GuardRule(what="secrets", where=["input", "retrieved", "output"], action="redact"),
            GuardRule(what="pii", where=["input", "retrieved", "output"], action="redact"),
            GuardRule(what="injection", where=["input", "retrieved"], action="block"),
        ],
    ),
)


class Policies:
    """Every policy this server knows by name (configured ones replace built-ins of the same name)."""

    def __init__(self, settings: GuardrailSettings | None = None) -> None:
        self.settings = settings or GuardrailSettings()
        self._by_name = {p.name: p for p in BUILTIN_POLICIES}
        for policy in self.settings.policies:
            self._by_name[policy.name] = policy
        for where, name in (*self.settings.defaults.items(), *self.settings.models.items()):
            if name and name not in self._by_name:
                raise ConfigError(f"guardrails: '{where}' names the unknown policy '{name}' ({self._known()})")

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, name: str) -> GuardPolicy:
        """The policy called `name`; ConfigError listing the known ones when there is none."""
        policy = self._by_name.get(name)
        if policy is None:
            raise ConfigError(f"unknown guardrail policy '{name}' ({self._known()})")
        return policy

    def check_name(self, name: str | None) -> None:
        """Raise ConfigError unless `name` is None or a known policy (for `keys create --policy`)."""
        if name is not None:
            self.get(name)

    def for_request(self, env: str, key_policy: str | None, model: str | None) -> GuardPolicy | None:
        """The key's policy (else the environment's default) together with the model's; None: no guardrails.

        A key naming a policy the server no longer knows is refused (403), never served unguarded.
        """
        if key_policy is not None and key_policy not in self._by_name:
            raise PermissionDenied(
                f"this key's guardrail policy '{key_policy}' is not configured on this server",
                code="unknown_policy",
            )
        base_name = key_policy or self.settings.defaults.get(env)
        model_name = self.settings.models.get(model) if model is not None else None
        chosen = [self._by_name[n] for n in dict.fromkeys(x for x in (base_name, model_name) if x)]
        return merge(chosen)

    def _known(self) -> str:
        return "known: " + ", ".join(self.names())


def merge(policies: Iterable[GuardPolicy]) -> GuardPolicy | None:
    """One policy with every rule of `policies`; it rehydrates only if all of them do."""
    chosen = list(policies)
    if not chosen:
        return None
    if len(chosen) == 1:
        return chosen[0]
    return GuardPolicy.model_construct(  # a derived name ('prod+kb') is not one users may configure
        name="+".join(p.name for p in chosen),
        rules=[rule for p in chosen for rule in p.rules],
        rehydrate=all(p.rehydrate for p in chosen),
    )
