"""The training executor: build a candidate's network, train it by a recipe, score it.

`TrainingExecutor(space, dataset, builder=..., recipe=...)` is an `Executor` over real training:

- the network comes from a builder (`archlore.tools.builders`: nb201, darts, cnn, mlp or the
  user's `package.module:function`), the data from `archlore.tools.data`, the training settings
  from a `Recipe` (`archlore.tools.recipe`);
- `evaluate(arch, epochs=None)` trains one candidate (for `epochs` instead of the recipe's when
  given: the fidelity) and returns `Metrics` with validation and test accuracy in percent,
  params and FLOPs counted from the built model, and `fidelity` = epochs trained;
  `evaluate_many(archs)` trains several at once (`concurrency` threads; one CUDA stream each on
  a GPU: NB201 networks leave a big GPU mostly idle);
- a candidate that cannot be built, runs out of memory or whose loss becomes NaN/inf comes back
  as failed `Metrics` with the reason; only KeyboardInterrupt propagates;
- with a `TrainCache`, nothing is trained twice (same space, arch, builder + options, recipe,
  data fingerprint, seed and fidelity), across runs too.

The loop is written for speed on a GPU the way airbench is: the whole data set lives on the
device when it fits (CIFAR does), augmentation (random crop by padding plus per-sample offsets,
flips, cutout) runs there in batches, bf16 autocast, channels_last for conv nets, a fused
optimizer, optional `torch.compile`, and no host synchronisation inside an epoch (the loss is
summed on the device and checked for NaN once per epoch); evaluation runs under
`torch.inference_mode`. On a CPU the same loop is a plain one (no autocast, no channels_last).

Determinism: with `concurrency=1` each candidate's initialisation and training draw only from
its own seed (the caller's RNG is left as it was), so on a CPU the same (arch, seed) gives the
same metrics for a fixed thread count. Concurrent candidates are initialised one at a time from
their seeds, and their batch order and augmentation use their own generators, but a model's own
randomness (dropout, drop path) then shares torch's global generator.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .builders import (
    Builder,
    BuildError,
    build_model,
    count_flops,
    count_params,
    default_builder,
    resolve_builder,
)
from .data import Dataset, load_dataset
from .errors import ConfigError
from .executors import Metrics
from .nets.nb201 import CellNetwork, reaches_output  # noqa: F401 - re-exported for older callers
from .recipe import Recipe, load_recipe
from .spaces import Arch, NB201Space, SearchSpace
from .train_cache import CacheKey, TrainCache

log = logging.getLogger(__name__)

_BUILD_LOCK = threading.Lock()  # model initialisation draws from torch's global RNG
#: Part of every cache key: bump it when a change to the loop changes what training produces,
#: so a cache filled by an older loop is not served as if it were this one's.
LOOP_VERSION = 1
EVAL_BATCH = 1024


class NonFiniteLoss(Exception):
    pass


@dataclass
class Trained:
    """A trained candidate: its network (on the training device, eval mode) and its metrics."""

    model: nn.Module | None
    metrics: Metrics


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def accepted_options(fn: Builder, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options `fn` can take (all when it has **kwargs or no signature)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return dict(options)
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(options)
    names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return {k: v for k, v in options.items() if k in names}


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


# ---------------------------------------------------------------------------------------------
# augmentation on the device, in batches


def augment_batch(x: torch.Tensor, recipe: Recipe, gen: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding + per-sample offsets), horizontal flip and cutout of a batch
    (N, C, H, W), all drawn from `gen` on `x`'s device."""
    a = recipe.augment
    n, _, h, w = x.shape
    dev = x.device
    if a.crop_padding:
        p = a.crop_padding
        padded = F.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (n,), device=dev, generator=gen)
        ox = torch.randint(0, 2 * p + 1, (n,), device=dev, generator=gen)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]  # (N, H, 1)
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]  # (N, 1, W)
        b = torch.arange(n, device=dev)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    if a.hflip:
        flip = torch.rand(n, device=dev, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if a.cutout:
        half = a.cutout // 2
        cy = torch.randint(0, h, (n, 1, 1), device=dev, generator=gen)
        cx = torch.randint(0, w, (n, 1, 1), device=dev, generator=gen)
        r = torch.arange(h, device=dev)[None, :, None]
        c = torch.arange(w, device=dev)[None, None, :]
        hole = ((r - cy).abs() <= half) & (r >= cy - half) & (r < cy + half) & ((c - cx) >= -half) & ((c - cx) < half)
        x = x * (~hole)[:, None].to(x.dtype)
    return x


def lr_at(recipe: Recipe, step: int, total: int, steps_per_epoch: int) -> float:
    """The learning rate of a step: linear warm-up, then cosine to 0 (or constant)."""
    warm = round(recipe.warmup_epochs * steps_per_epoch)
    if step < warm:
        return recipe.lr * (step + 1) / warm
    if recipe.schedule == "constant":
        return recipe.lr
    span = max(1, total - warm)
    return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * (step - warm) / span))


# ---------------------------------------------------------------------------------------------
# the executor


class TrainingExecutor:
    """Trains candidates of `space` on `dataset` with `recipe` (see the module docstring).

    `dataset` is a `Dataset` or a spec for `load_dataset` ("digits", "cifar10", "npz:PATH" ...);
    `builder` is "auto" (`default_builder(space)`), a builder name, "package.module:function" or
    a callable; `model_options` are added to the recipe's `model` options (a recipe's options the
    builder does not take are left out; explicit `model_options` never are). `seed` (default:
    the recipe's) seeds initialisation, batch order and augmentation. `threads` sets torch's
    intra-op threads while training (None: torch's default). `epochs` overrides the recipe's.
    """

    def __init__(
        self,
        space: SearchSpace | None = None,
        dataset: Dataset | str = "digits",
        *,
        builder: str | Builder = "auto",
        recipe: Recipe | str = "proxy",
        model_options: Mapping[str, Any] | None = None,
        device: str | torch.device | None = None,
        seed: int | None = None,
        cache: TrainCache | str | Path | None = None,
        threads: int | None = None,
        concurrency: int = 1,
        epochs: int | None = None,
        data_root: str | Path | None = None,
    ) -> None:
        self.space = space if space is not None else NB201Space()
        self.recipe = load_recipe(recipe)
        if epochs is not None:
            self.recipe = self.recipe.with_(epochs=int(epochs))
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be at least 1 (or None for torch's default), got {threads}")
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        self.data = load_dataset(dataset, root=data_root)  # loaded (and cached) now: wall times are training only
        self.task = self.data.name
        self.shape = self.data.shape
        spec = default_builder(self.space, self.shape) if builder == "auto" else builder
        self.builder_name = spec if isinstance(spec, str) else getattr(spec, "__qualname__", repr(spec))
        raw = resolve_builder(spec)
        self.options = {**accepted_options(raw, self.recipe.model), **dict(model_options or {})}
        self._builder = resolve_builder(spec, self.options)  # checks the signature takes the options
        self.seed = int(self.recipe.seed if seed is None else seed)
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.threads = threads
        self.concurrency = int(concurrency)
        self.cache = TrainCache(cache) if isinstance(cache, (str, Path)) else cache
        self._device_data: dict[str, tuple[torch.Tensor, ...]] = {}
        self._data_lock = threading.Lock()
        self._costs: dict[str, dict[str, float]] = {}

    def __repr__(self) -> str:
        return (
            f"TrainingExecutor({self.space.name!r}, {self.task!r}, builder={self.builder_name!r}, "
            f"recipe={self.recipe.name!r}, epochs={self.recipe.epochs}, device={self.device})"
        )

    # -- compatibility with the earlier fixed-recipe executor ----------------------------------
    @property
    def epochs(self) -> int:
        return self.recipe.epochs

    @property
    def batch_size(self) -> int:
        return self.recipe.batch_size

    @property
    def lr(self) -> float:
        return self.recipe.lr

    def record(self) -> dict[str, Any]:
        """What a run's record says about how candidates were trained."""
        return {
            "builder": self.builder_name, "model_options": self.options, "recipe": self.recipe.to_record(),
            "data": self.data.record(), "seed": self.seed, "device": str(self.device),
            "concurrency": self.concurrency,
        }

    # -- building ------------------------------------------------------------------------------
    def build(self, arch: Arch) -> nn.Module:
        """The untrained network of `arch` (initialised from torch's global RNG); BuildError if it cannot be built."""
        arch = self.space.validate(arch)
        return build_model(self._builder, self.space.describe(arch), self.shape, self.options,
                           candidate=self.space.to_string(arch))

    def cost_of(self, arch: Arch) -> dict[str, float]:
        """Params and FLOPs of the built model, without training (for cost limits); cached."""
        key = self.space.to_string(self.space.validate(arch))
        if key not in self._costs:
            with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = self.build(arch)
            self._costs[key] = self._count(model, torch.device("cpu"))
        return dict(self._costs[key])

    def _count(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        n_params = count_params(model)
        sample = self.data.x_valid[:1].to(device)
        if device.type == "cuda" and self.data.is_image:
            sample = sample.contiguous(memory_format=torch.channels_last)
        flops = count_flops(model, sample)
        return {"params": float(n_params), "flops": float(flops), "params_mb": n_params / 1e6, "flops_m": flops / 1e6}

    def cache_key(self, arch: Arch, fidelity: int, seed: int | None = None) -> CacheKey:
        builder = json.dumps({"builder": self.builder_name, "options": self.options, "loop": LOOP_VERSION},
                             sort_keys=True, default=str)
        return CacheKey(self.space.name, self.space.to_string(arch), builder, self.recipe.hash(),
                        self.data.fingerprint, self.seed if seed is None else int(seed), int(fidelity))

    # -- evaluating ----------------------------------------------------------------------------
    def evaluate(self, arch: Arch, epochs: int | None = None) -> Metrics:
        arch = self.space.validate(arch)  # a malformed genotype is the caller's error: it raises
        with _torch_threads(self.threads):
            return self._evaluate(arch, epochs, self.device, exclusive=True).metrics

    def evaluate_many(self, archs: Sequence[Arch], epochs: int | None = None) -> list[Metrics]:
        """Train several candidates, `concurrency` at a time; metrics in the order of `archs`."""
        out: dict[int, Metrics] = dict(self.as_completed(archs, epochs))
        return [out[i] for i in range(len(archs))]

    def as_completed(self, archs: Sequence[Arch], epochs: int | None = None) -> Iterator[tuple[int, Metrics]]:
        """Train several candidates, `concurrency` at a time, yielding (index, metrics) as each
        finishes (so a caller can record each result at once: a kill loses no finished one)."""
        archs = [self.space.validate(a) for a in archs]
        if self.concurrency == 1 or len(archs) <= 1:
            for i, a in enumerate(archs):
                yield i, self.evaluate(a, epochs)
            return
        if self.device.type == "cuda":
            self._on_device(self.device)  # upload once, before the streams start

        def one(a: Arch) -> Metrics:
            stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                m = self._evaluate(a, epochs, self.device, exclusive=False).metrics
            if stream is not None:
                stream.synchronize()
            return m

        with _torch_threads(self.threads), ThreadPoolExecutor(self.concurrency) as pool:
            futures = {pool.submit(one, a): i for i, a in enumerate(archs)}
            try:
                for f in as_completed(futures):
                    yield futures[f], f.result()
            finally:
                for f in futures:  # a caller that stops early (Ctrl-C) starts nothing new
                    f.cancel()

    def train(self, arch: Arch, *, epochs: int | None = None, seed: int | None = None) -> Trained:
        """Train `arch` and keep the network (for a final model); not cached, never raises for
        a failed candidate (its `metrics` say why and `model` is None)."""
        arch = self.space.validate(arch)
        with _torch_threads(self.threads):
            return self._evaluate(arch, epochs, self.device, exclusive=True, seed=seed, keep=True)

    def _evaluate(self, arch: Arch, epochs: int | None, device: torch.device, *, exclusive: bool,
                  seed: int | None = None, keep: bool = False) -> Trained:
        start = time.perf_counter()
        fidelity = int(epochs or self.recipe.epochs)
        if fidelity < 1:
            raise ConfigError(f"epochs must be at least 1, got {fidelity}")
        seed = self.seed if seed is None else int(seed)
        key = self.cache_key(arch, fidelity, seed)
        if self.cache is not None and not keep:
            hit = self.cache.get(key)
            if hit is not None:
                log.debug("cache hit for %s at %d epochs", key.arch, fidelity)
                return Trained(None, Metrics(hit.valid, hit.test, hit.cost, time.perf_counter() - start,
                                             hit.status, hit.reason, hit.fidelity))
        fork = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        rng = torch.random.fork_rng(devices=fork) if exclusive else contextlib.nullcontext()
        model: nn.Module | None = None
        cost: dict[str, float] = {}
        try:
            with rng:
                with _BUILD_LOCK, (torch.random.fork_rng(devices=[]) if not exclusive else contextlib.nullcontext()):
                    torch.manual_seed(seed)
                    model = self.build(arch)
                if exclusive:
                    torch.manual_seed(seed)  # the model's own randomness (dropout, drop path) from the seed too
                model = model.to(device)
                if device.type == "cuda" and self.data.is_image:
                    model = model.to(memory_format=torch.channels_last)
                cost = self._count(model, device)
                train_seconds = self._train(model, fidelity, device, seed)
                valid = self._accuracy(model, "valid", device)
                test = self._accuracy(model, "test", device)
        except KeyboardInterrupt:
            raise
        except BuildError as exc:  # deterministic: cached as failed
            m = Metrics.failed(str(exc), wall_time=time.perf_counter() - start, fidelity=fidelity)
            if self.cache is not None and not keep:
                self.cache.put(key, m)
            log.warning("%s", exc)
            return Trained(None, m)
        except NonFiniteLoss as exc:
            return Trained(None, Metrics.failed(str(exc), wall_time=time.perf_counter() - start, fidelity=fidelity, cost=cost))
        except Exception as exc:  # noqa: BLE001 - any fault of one candidate is recorded, the search goes on
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = (f"out of memory ({first[:160]})" if _is_oom(exc)
                      else f"training failed: {type(exc).__name__}: {first[:200]}")
            log.warning("candidate %s: %s", key.arch, reason)
            return Trained(None, Metrics.failed(reason, wall_time=time.perf_counter() - start, fidelity=fidelity, cost=cost))
        wall = time.perf_counter() - start
        m = Metrics(valid, test, {**cost, "train_seconds": train_seconds}, wall, "ok", "", fidelity)
        log.debug("trained %s on %s for %d epochs: valid %.2f test %.2f in %.1fs", key.arch, self.task, fidelity, valid, test, wall)
        if self.cache is not None and not keep:
            self.cache.put(key, m)
        return Trained(model.eval() if keep else None, m)

    # -- the loop ------------------------------------------------------------------------------
    def _on_device(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The six tensors where training reads them: on the device when they fit (half the free
        memory at most), else on the host (pinned on CUDA) and copied batch by batch."""
        name = str(device)
        with self._data_lock:
            if name not in self._device_data:
                d = self.data
                tensors = (d.x_train, d.y_train, d.x_valid, d.y_valid, d.x_test, d.y_test)
                if device.type == "cuda":
                    need = sum(t.numel() * t.element_size() for t in tensors)
                    free, _ = torch.cuda.mem_get_info(device)
                    if need < free // 2:
                        fmt = torch.channels_last if d.is_image else torch.contiguous_format
                        tensors = tuple(t.to(device).contiguous(memory_format=fmt) if t.dim() == 4 else t.to(device)
                                        for t in tensors)
                        torch.cuda.synchronize(device)
                    else:
                        log.info("data set %s (%.1f GB) stays on the host", d.name, need / 1e9)
                        tensors = tuple(t.pin_memory() for t in tensors)
                self._device_data[name] = tensors
            return self._device_data[name]

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        p = self.recipe.precision
        if p == "bf16" or (p == "auto" and device.type == "cuda"):
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _optimizer(self, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
        r = self.recipe
        params = [p for p in model.parameters() if p.requires_grad]
        fused = {"fused": True} if device.type == "cuda" else {}
        if r.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay, **fused)
        return torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, nesterov=r.nesterov and r.momentum > 0,
                               weight_decay=r.weight_decay, **fused)

    def _train(self, model: nn.Module, epochs: int, device: torch.device, seed: int) -> float:
        start = time.perf_counter()
        r = self.recipe
        x, y = self._on_device(device)[:2]
        on_device = x.device == device
        n = len(y)
        bs = min(r.batch_size, n)
        steps = -(-n // bs)
        if steps > 1 and n - (steps - 1) * bs == 1:  # a last batch of one sample breaks batch norm
            steps -= 1
        total = steps * epochs
        opt = self._optimizer(model, device)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=r.label_smoothing)
        gen_cpu = torch.Generator().manual_seed(seed)
        gen_dev = torch.Generator(device).manual_seed(seed) if device.type == "cuda" else gen_cpu
        augment = r.augment.active and self.data.is_image
        net = torch.compile(model) if r.compile else model
        has_drop_path = hasattr(model, "drop_path_prob")
        cl = device.type == "cuda" and self.data.is_image
        model.train()
        step = 0
        for epoch in range(epochs):
            if has_drop_path:
                model.drop_path_prob = r.drop_path * epoch / epochs  # type: ignore[assignment]
            order = torch.randperm(n, generator=gen_cpu)
            if on_device:
                order = order.to(device, non_blocking=True)
            loss_sum = torch.zeros((), device=device)
            for b in range(steps):
                idx = order[b * bs : (b + 1) * bs]
                xb, yb = x[idx], y[idx]
                if not on_device:
                    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                if augment:
                    xb = augment_batch(xb, r, gen_dev)
                if cl:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                lr = lr_at(r, step, total, steps)
                for g in opt.param_groups:
                    g["lr"] = lr
                with self._autocast(device):
                    out = net(xb)
                    if isinstance(out, (tuple, list)):
                        logits, aux = out[0], out[1]
                        loss = loss_fn(logits, yb)
                        if aux is not None and r.auxiliary_weight > 0:
                            loss = loss + r.auxiliary_weight * loss_fn(aux, yb)
                    else:
                        loss = loss_fn(out, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if r.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
                opt.step()
                loss_sum += loss.detach().float()
                step += 1
            if not bool(torch.isfinite(loss_sum)):  # the one host synchronisation of an epoch
                raise NonFiniteLoss(f"loss became {'NaN' if torch.isnan(loss_sum) else 'inf'} in epoch {epoch + 1} of {epochs}")
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()
        return time.perf_counter() - start

    def _accuracy(self, model: nn.Module, split: str, device: torch.device) -> float:
        t = self._on_device(device)
        x, y = (t[2], t[3]) if split == "valid" else (t[4], t[5])
        model.eval()
        correct = torch.zeros((), dtype=torch.long, device=device)
        with torch.inference_mode(), self._autocast(device):
            for i in range(0, len(y), EVAL_BATCH):
                xb, yb = x[i : i + EVAL_BATCH].to(device, non_blocking=True), y[i : i + EVAL_BATCH].to(device, non_blocking=True)
                if device.type == "cuda" and self.data.is_image:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                out = model(xb)
                logits = out[0] if isinstance(out, (tuple, list)) else out
                correct += (logits.argmax(dim=1) == yb).sum()
        model.train()
        return 100.0 * int(correct) / len(y)
