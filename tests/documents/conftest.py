"""The real embedder and libraries over temporary roots."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from doc_files import library_settings

from garrison.documents.library import Library
from garrison.settings import load_settings

Embed = Callable[[list[str]], np.ndarray]


@pytest.fixture(scope="session")
def embed() -> Embed:
    """The real all-MiniLM-L6-v2 int8 ONNX embedder (in-process, ~23 MB, one thread)."""
    from garrison.engines.embeddings import OnnxEmbedder
    from garrison.registry import embedding_model_info

    settings = load_settings(engine={"threads": 1})
    return OnnxEmbedder(embedding_model_info(), settings).vectors


@pytest.fixture
def make_library(tmp_path: Path, embed: Embed) -> Iterator[Callable[..., Library]]:
    """Open a Library over roots under tmp_path; every one opened is closed afterwards."""
    opened: list[Library] = []

    def make(roots: list[dict[str, object]], **documents: object) -> Library:
        library = Library.open(library_settings(tmp_path / "home", roots, **documents), embed=embed)
        opened.append(library)
        return library

    yield make
    for library in opened:
        library.close()
