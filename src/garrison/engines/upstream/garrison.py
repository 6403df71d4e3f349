"""`engine = "garrison"`: a central garrison as the upstream of a local one (tiers, docs/scale.md).

The wire is the OpenAI one (engines/upstream/openai.py) plus what a garrison adds to its answers: the
`citations` and `classification` of a grounded answer, relayed as a `Citations` event. Every attempt (a retry
on another replica too) carries `Authorization: Bearer <token>`, a token this gateway signs for the end user
the request runs for (security/federation.py: key id, environment, clearance, scopes, the local request id as
`rid`, `act` naming this gateway, the central tier as `aud`, seconds of life, a fresh `jti`), and
`X-Request-Id: <local request id>`, and the request's data label (`X-Garrison-Data-Label`, as the caller declared
it or a local stage raised it), so the central tier checks the label against the user's clearance and its own
models' trust as well. The central tier's `x-request-id` answer header is noted in the request's
annotations, so the local audit record names the central record (`details.forwarded.central_request_id`).
Health probes carry a token for this gateway itself (`sub` "gateway:<name>", public clearance, no scopes).
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
from typing import Any

from garrison.domain import (
    Citation,
    Citations,
    EmbeddingRequest,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
)
from garrison.engines.upstream.config import UpstreamModelConfig
from garrison.engines.upstream.engine import UpstreamEngine
from garrison.engines.upstream.openai import OpenAIWire, SseDecoder
from garrison.engines.upstream.routing import Replica
from garrison.security.federation import TokenSigner
from garrison.security.principal import CLEARANCES, DATA_LABEL_HEADER, Principal

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _note(request: GenerationRequest | EmbeddingRequest, **facts: Any) -> None:
    """Facts for the local audit record (`details.forwarded`)."""
    request.annotations.setdefault("forwarded", {}).update(facts)


def _citations(data: dict[str, Any], request: GenerationRequest) -> Citations | None:
    """A garrison answer's citations, those above the end user's clearance dropped (the central tier should
    have sent none: this is the local tier's own check)."""
    items = data.get("citations")
    if not isinstance(items, list):
        return None
    caller = request.on_behalf_of
    ceiling = CLEARANCES.index(caller.clearance) if caller is not None else 0
    kept: list[Citation] = []
    for item in items:
        if not isinstance(item, dict) or item.get("label") not in CLEARANCES:
            continue
        if CLEARANCES.index(item["label"]) > ceiling:
            continue
        try:
            kept.append(Citation(
                number=int(item["number"]), document_id=str(item["document_id"]), title=str(item.get("title", "")),
                path=str(item.get("path", "")), collection=str(item.get("collection", "")),
                page=int(item["page"]) if isinstance(item.get("page"), int) else None,
                heading=str(item["heading"]) if isinstance(item.get("heading"), str) else None,
                label=item["label"], quote=str(item.get("quote", "")),
            ))
        except (KeyError, TypeError, ValueError):
            continue
    label = data.get("classification")
    classification = label if isinstance(label, str) and label in CLEARANCES else None
    _note(request, classification=classification, cited=[c.document_id for c in kept],
          withheld=len(items) - len(kept))
    return Citations(kept, classification)


class GarrisonDecoder(SseDecoder):
    """OpenAI's SSE plus garrison's citations chunk (no choices, sent just before `[DONE]`)."""

    def feed(self, line: bytes) -> list[GenerationEvent]:
        if line.startswith(b"data:") and b'"citations"' in line:
            try:
                chunk = json.loads(line[5:])
            except ValueError:
                chunk = None
            if isinstance(chunk, dict) and "citations" in chunk and not chunk.get("choices"):
                citations = _citations(chunk, self.request)
                return [citations] if citations is not None else []
        return super().feed(line)


class GarrisonWire(OpenAIWire):
    """A garrison's /v1: the OpenAI wire, its models listed by their ids, citations relayed."""

    name = "garrison"
    require_listed = True  # a garrison lists exactly the ids it serves (to this peer)

    def decoder(self, request: GenerationRequest, started_ns: int) -> GarrisonDecoder:
        return GarrisonDecoder(request, started_ns)

    def whole(self, data: dict[str, Any], request: GenerationRequest, started_ns: int) -> list[GenerationEvent]:
        events = super().whole(data, request, started_ns)
        citations = _citations(data, request)
        if citations is None:
            return events
        done = [e for e in events if isinstance(e, GenerationDone)]
        return [*(e for e in events if not isinstance(e, GenerationDone)), citations, *done]


class GarrisonEngine(UpstreamEngine):
    """An upstream engine whose every request carries a token signed for its end user (see the module)."""

    def __init__(self, config: UpstreamModelConfig, signer: TokenSigner, *, ttl_s: float, env: str) -> None:
        super().__init__(config, GarrisonWire())
        assert config.audience is not None  # the config's validator requires it for engine = "garrison"
        self.signer, self.audience, self.ttl_s = signer, config.audience, ttl_s
        self._gateway = Principal(key_id=f"gateway:{signer.issuer}", name=signer.issuer, env=env,
                                  scopes=frozenset(), models=frozenset(), clearance="public")

    def _headers(self, request: GenerationRequest | EmbeddingRequest | None) -> dict[str, str]:
        if request is None:  # a health probe: this gateway asks for itself
            token = self.signer.mint(self._gateway, audience=self.audience,
                                     request_id=f"probe-{secrets.token_hex(8)}", ttl_s=self.ttl_s)
            return {"Authorization": f"Bearer {token}"}
        who = request.on_behalf_of or self._gateway
        if who.is_anonymous:  # auth is off here: the central tier's ceiling for this peer still applies
            who = dataclasses.replace(who, key_id="anonymous")
        token = self.signer.mint(who, audience=self.audience, request_id=request.request_id, ttl_s=self.ttl_s)
        headers = {"Authorization": f"Bearer {token}", "X-Request-Id": request.request_id}
        if request.data_label is not None:  # the central tier checks it too: its clearance and its models' trust
            headers[DATA_LABEL_HEADER] = request.data_label
        return headers

    def _answered(self, request: GenerationRequest | EmbeddingRequest, replica: Replica, headers: Any) -> None:
        central = headers.get("x-request-id") if headers is not None else None
        _note(request, upstream=replica.url, audience=self.audience,
              central_request_id=central if isinstance(central, str) and _SAFE_ID.match(central) else None)
