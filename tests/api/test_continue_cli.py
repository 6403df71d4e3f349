"""Continue's headless CLI (`cn -p`) answers a prompt against garrison with its default tools enabled.

`cn` comes from npm (`npm install -g @continuedev/cli`, a few seconds); `make test` installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

MODEL = "smollm2-135m-instruct"
pytestmark = pytest.mark.model

CONFIG = """name: garrison
version: 1.0.0
schema: v1
models:
  - name: garrison chat
    provider: {provider}
    model: {model}
    apiBase: {base}
    apiKey: {key}
    roles: [chat, edit, apply]
    defaultCompletionOptions:
      contextLength: 2048
      maxTokens: 64
      temperature: 0
"""


@pytest.mark.parametrize("provider", ["openai", "ollama"])
def test_cn_answers_with_its_default_tools(live_server, tmp_path: Path, provider: str) -> None:
    cn = shutil.which("cn")
    assert cn is not None, "Continue's CLI is missing: npm install -g @continuedev/cli (make test does it)"
    base = live_server.openai_base if provider == "openai" else f"{live_server.url}/"
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(provider=provider, model=MODEL, base=base, key=live_server.api_key))
    env = {**os.environ, "HOME": str(tmp_path), "CONTINUE_GLOBAL_DIR": str(tmp_path / ".continue"),
           "CONTINUE_TELEMETRY_ENABLED": "0", "NO_COLOR": "1"}
    before = live_server.app.state.inference.engine(MODEL).metrics()["requests_total"]
    done = subprocess.run([cn, "--config", str(config), "-p", "Say hello in one short sentence."],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip(), done.stderr
    assert "tool calling is not supported" not in done.stdout + done.stderr
    after = live_server.app.state.inference.engine(MODEL).metrics()["requests_total"]
    assert after > before  # the answer came from garrison's model
