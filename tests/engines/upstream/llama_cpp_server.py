"""`python -m llama_cpp.server`, unchanged, except that on a build with llama.cpp's AMX buffer type the model
loads with extra buffer types off: plain llama-cpp-python crashes in that path on its first decode on Intel
AMX CPUs (llama.cpp#20824; docs/engine.md), and llama_cpp.server has no option to avoid it. Elsewhere it is
the stock server. Run as `python tests/engines/upstream/llama_cpp_server.py ARGS...` (the server's own args).
"""

from __future__ import annotations

import runpy
import sys

import llama_cpp.llama_cpp as native

from garrison.engines.cpu import extra_buffer_types


def main() -> None:
    if "AMX" in extra_buffer_types():
        stock = native.llama_model_default_params

        def without_extra_buffers() -> native.llama_model_params:
            params = stock()
            params.use_extra_bufts = False
            return params

        native.llama_model_default_params = without_extra_buffers  # type: ignore[assignment]
    sys.argv[0] = "llama_cpp.server"
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
