"""Model integrity for remote models: the revision a replica reports must be the one pinned in garrison.toml.

What "revision" means per engine: vLLM's `/v1/models` entry carries `root` (the weights it loaded); Ollama's
`/api/tags` carries each model's `digest` (sha256 of its manifest); a garrison peer reports its GGUF's sha256
in both places. Servers that report nothing (llama_cpp.server, TGI) cannot be pinned: a pinned model on such a
replica is treated as drifted, never routed to.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Probe:
    """What one model-listing probe of a replica found."""

    listed: bool  # the upstream lists the model by the name garrison sends
    revision: str | None  # its reported identity, if the engine exposes one


def normalize(revision: str) -> str:
    """Compare digests with or without their 'sha256:' prefix and in any case; other revisions as written."""
    text = revision.strip()
    lowered = text.lower()
    if lowered.startswith("sha256:"):
        return lowered.removeprefix("sha256:")
    if len(lowered) == 64 and all(c in "0123456789abcdef" for c in lowered):
        return lowered
    return text


def drift(pinned: str | None, probe: Probe, model: str) -> str | None:
    """Why this replica must not serve the pinned model (None when it may)."""
    if pinned is None:
        return None
    if not probe.listed:
        return f"does not list model '{model}', so its pinned revision cannot be confirmed"
    if probe.revision is None:
        return f"does not report a revision for '{model}', so the pinned revision cannot be confirmed"
    if normalize(probe.revision) != normalize(pinned):
        return f"reports revision {probe.revision!r} for '{model}', but garrison.toml pins {pinned!r}"
    return None
