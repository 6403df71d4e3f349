"""Settings of tiers: an `engine = "garrison"` model, federation names, and TLS for serving."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pki import Pki
from pydantic import ValidationError

from garrison.api.server import tls_options
from garrison.engines.upstream.config import UpstreamModelConfig
from garrison.errors import ConfigError
from garrison.registry import build_registry
from garrison.settings import Settings, TlsSettings

_MODEL = {"id": "hq", "engine": "garrison", "upstreams": ["https://hq:8400/v1"]}


def test_a_garrison_upstream_needs_an_audience_and_takes_no_api_key() -> None:
    with pytest.raises(ValidationError, match="audience"):
        UpstreamModelConfig.model_validate(_MODEL)
    with pytest.raises(ValidationError, match="signed tokens"):
        UpstreamModelConfig.model_validate({**_MODEL, "audience": "hq", "api_key_env": "KEY"})
    with pytest.raises(ValidationError, match="audience"):
        UpstreamModelConfig.model_validate({**_MODEL, "engine": "openai", "audience": "hq"})
    assert UpstreamModelConfig.model_validate({**_MODEL, "audience": "hq"}).trust == "internal"


def test_a_garrison_model_needs_this_gateways_federation_name(tmp_path: Path) -> None:
    from garrison.service import InferenceService

    settings = Settings(home=tmp_path, default_model=False, engine={"embeddings": False},
                        models=[{**_MODEL, "audience": "hq"}])
    assert [m.engine for m in build_registry(settings)] == ["garrison"]  # describing it contacts nothing
    with pytest.raises(ConfigError, match=r"\[federation\] name"):
        InferenceService.from_settings(settings)


def test_upstream_tls_files_make_a_client_context(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    client = pki.client("ws")
    tls = UpstreamModelConfig.model_validate({
        **_MODEL, "audience": "hq", "tls": {"ca_file": str(pki.ca), "cert_file": str(client.cert),
                                            "key_file": str(client.key)},
    }).tls
    context = tls.context()
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ConfigError, match="TLS"):
        tls.model_copy(update={"ca_file": tmp_path / "missing.pem"}).context()
    with pytest.raises(ValidationError, match="go together"):
        UpstreamModelConfig.model_validate({**_MODEL, "audience": "hq", "tls": {"cert_file": str(client.cert)}})


def test_serving_tls_settings_become_uvicorns_options(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    server = pki.server()
    assert tls_options(Settings(home=tmp_path)) == {}
    mutual = Settings(home=tmp_path, tls={"cert_file": server.cert, "key_file": server.key,
                                          "client_ca_file": pki.ca, "client_cert": "required"})
    assert tls_options(mutual) == {"ssl_certfile": str(server.cert), "ssl_keyfile": str(server.key),
                                   "ssl_ca_certs": str(pki.ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    with pytest.raises(ConfigError, match="does not exist"):
        tls_options(Settings(home=tmp_path, tls={"cert_file": tmp_path / "no.pem", "key_file": server.key}))
    with pytest.raises(ValidationError, match="client_ca_file"):
        TlsSettings(cert_file=server.cert, key_file=server.key, client_cert="required")
    with pytest.raises(ValidationError, match="go together"):
        TlsSettings(cert_file=server.cert)
