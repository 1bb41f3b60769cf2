"""The MiniLM embedding without torch: the NumPy encoder gives sentence-transformers' vectors, and
the memory's command line imports nothing heavy until a command needs it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from archlore.memory.embeddings import MiniLMEmbedding, _model_dir
from archlore.memory.minilm import MiniLMEncoder, _gelu

TEXTS = [
    "Prefer nor_conv_3x3 at edge2<-1: 60% of the top cells of cifar10 (run r1) use it there, against 20% of all cells.",
    "image classification of 32x32 colour photos into 10 object classes",
    "",
    "avoid pooling " * 200,  # longer than the 256-token window: truncated as sentence-transformers does
    "Ünïcödé, punctuation!!! and numbers 12345 — with a dash",
    "keyword spotting",
]


def _python(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("ARCHLORE_MEMORY", "ARCHLORE_EMBED_BACKEND")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout.strip()


def test_gelu_matches_the_exact_one():
    from math import erf, sqrt

    x = np.linspace(-12, 12, 4001, dtype=np.float32)
    exact = np.array([0.5 * v * (1 + erf(v / sqrt(2))) for v in x.astype(np.float64)])
    assert np.abs(_gelu(x.copy()) - exact).max() < 2e-6


@pytest.mark.slow
def test_numpy_minilm_gives_the_sentence_transformers_vectors():
    st = pytest.importorskip("sentence_transformers")
    ours = MiniLMEncoder(_model_dir()).encode(TEXTS, batch_size=4)
    ref = st.SentenceTransformer(str(_model_dir()), device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert ours.shape == (len(TEXTS), 384) and np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert float((ours * ref).sum(axis=1).min()) > 0.99999
    assert np.abs(ours - ref).max() < 1e-5
    # batch composition does not change a text's vector beyond float noise
    alone = MiniLMEncoder(_model_dir()).encode(TEXTS[:1])
    assert np.abs(alone[0] - ours[0]).max() < 1e-5


@pytest.mark.slow
def test_minilm_embedding_runs_without_torch():
    out = _python(
        "import sys; from archlore.memory.embeddings import MiniLMEmbedding;"
        "v = MiniLMEmbedding()(['prefer conv', 'avoid pool']);"
        "print(len(v), v[0].shape[0], 'torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    )
    assert out.split() == ["2", "384", "False", "False"]
    assert MiniLMEmbedding.name() == "all-MiniLM-L6-v2"


def test_the_memory_cli_imports_nothing_heavy():
    heavy = ("chromadb", "numpy", "torch", "sentence_transformers", "transformers", "onnxruntime", "pydantic")
    out = _python(
        "import sys; import archlore.agents.cli_memory;"
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules) or 'none')"
    )
    assert out == "none"
