"""Training throughput: archlore's executor loop against a plain PyTorch loop, and candidates per hour.

    python -m archlore.benchmarks.throughput --device cpu --threads 1 --train-size 512 --repeats 3
    python -m archlore.benchmarks.throughput --device cuda --train-size 45000 --candidates 12 --concurrency 4

1. Ratio: the same NB201 network (the recipe's model options; the best CIFAR-10 cell of
   NB201 by default), the same synthetic CIFAR-shaped data (3x32x32, 10 classes, `--train-size`
   images), the same recipe (`--recipe`, nb201-12 by default: SGD Nesterov, batch 256, random
   crop 4 + flip), trained for `--epochs` epochs, once by `TrainingExecutor` and once by a plain,
   straightforward loop: a `Dataset` whose `__getitem__` crops and flips one image (as
   torchvision's RandomCrop(32, 4) and RandomHorizontalFlip do), a shuffling `DataLoader`, each
   batch copied to the device, `loss.item()` logged every step, CosineAnnealingLR per epoch.
   Both runs are timed on training only, alternately, `--repeats` times; the medians give images
   per second and their ratio.
2. Candidates per hour at the recipe: `--candidates` random NB201 cells trained by the executor
   (with `--concurrency` at once) on `--train-size` images for `--epochs`; the measured images
   per second of the whole pipeline is extrapolated to the recipe's full run (its epochs x
   45,000 training images, plus evaluating 5,000 validation and 10,000 test images), so on a CPU
   the figure is an extrapolation from a subset and says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from archlore.tools.data import Dataset
from archlore.tools.recipe import Recipe, load_recipe
from archlore.tools.spaces import NB201Space
from archlore.tools.training import TrainingExecutor

BEST_C10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
CIFAR_TRAIN, CIFAR_EVAL = 45_000, 15_000  # train after carving 5,000 for valid; valid + test


def synthetic(n_train: int, n_eval: int = 256, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)

    def part(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)

    (xt, yt), (xv, yv), (xs, ys) = part(n_train), part(n_eval), part(n_eval)
    return Dataset("synthetic-cifar", xt, yt, xv, yv, xs, ys, 10,
                   {"source": "torch.randn", "split_seed": seed, "split": "synthetic",
                    "sizes": {"train": n_train, "valid": n_eval, "test": n_eval}})


class _AugmentedImages(torch.utils.data.Dataset):
    """Per-sample random crop with zero padding and horizontal flip, as torchvision does it."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, recipe: Recipe) -> None:
        self.x, self.y, self.pad, self.flip = x, y, recipe.augment.crop_padding, recipe.augment.hflip

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.x[i]
        if self.pad:
            h, w = img.shape[1:]
            img = F.pad(img, (self.pad,) * 4)
            dy, dx = (int(v) for v in torch.randint(0, 2 * self.pad + 1, (2,)))
            img = img[:, dy : dy + h, dx : dx + w]
        if self.flip and torch.rand(()) < 0.5:
            img = img.flip(2)
        return img, self.y[i]


def plain_loop(model: nn.Module, data: Dataset, recipe: Recipe, epochs: int, device: torch.device, seed: int) -> float:
    """A straightforward training loop; returns its training seconds."""
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(_AugmentedImages(data.x_train, data.y_train, recipe),
                                         batch_size=recipe.batch_size, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                          weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    model.train()
    running = 0.0
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            running += loss.item()
        sched.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def ratio(*, recipe: Recipe, data: Dataset, epochs: int, device: torch.device, repeats: int, arch: str) -> dict:
    space = NB201Space()
    a = space.from_string(arch)
    ex = TrainingExecutor(space, data, recipe=recipe.with_(epochs=epochs), device=device, seed=0)
    # warm-up (one batch each): kernels, allocator and oneDNN/cuDNN plans are made outside the timings
    small = synthetic(recipe.batch_size, seed=1)
    plain_loop(ex.build(a).to(device), small, recipe, 1, device, seed=0)
    TrainingExecutor(space, small, recipe=recipe.with_(epochs=1), device=device).evaluate(a)
    ours, plain = [], []

    def run_ours() -> None:
        m = ex.evaluate(a)
        assert m.ok, m.reason
        ours.append(m.cost["train_seconds"])

    def run_plain(r: int) -> None:
        torch.manual_seed(r)
        plain.append(plain_loop(ex.build(a).to(device), data, recipe, epochs, device, seed=r))

    for r in range(repeats):  # alternate which goes first, so a drift in machine load hits both
        if r % 2:
            run_ours()
            run_plain(r)
        else:
            run_plain(r)
            run_ours()
    n = len(data.y_train) * epochs
    ours_ips, plain_ips = n / statistics.median(ours), n / statistics.median(plain)
    return {"images": n, "archlore_seconds": ours, "plain_seconds": plain, "archlore_images_per_s": ours_ips,
            "plain_images_per_s": plain_ips, "ratio": ours_ips / plain_ips}


def candidates_per_hour(*, recipe: Recipe, data: Dataset, epochs: int, device: torch.device, candidates: int,
                        concurrency: int, seed: int = 0) -> dict:
    space = NB201Space()
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(candidates)]
    ex = TrainingExecutor(space, data, recipe=recipe.with_(epochs=epochs), device=device, concurrency=concurrency)
    start = time.perf_counter()
    ms = ex.evaluate_many(archs)
    wall = time.perf_counter() - start
    failed = [m.reason for m in ms if not m.ok]
    n_train = len(data.y_train) * epochs * candidates
    n_eval = (len(data.y_valid) + len(data.y_test)) * candidates
    # split the wall time into training and evaluation by the executor's own train_seconds share
    train_share = sum(m.cost.get("train_seconds", 0.0) for m in ms) / max(1e-9, sum(m.wall_time for m in ms))
    train_ips = n_train / (wall * train_share)
    eval_ips = n_eval / max(1e-9, wall * (1 - train_share))
    full = recipe.epochs * CIFAR_TRAIN / train_ips + CIFAR_EVAL / eval_ips  # seconds per candidate, all in parallel lanes
    return {"candidates": candidates, "concurrency": concurrency, "wall_seconds": wall, "failed": failed,
            "train_images_per_s": train_ips, "eval_images_per_s": eval_ips,
            "seconds_per_full_candidate": full, "candidates_per_hour": 3600.0 / full,
            "extrapolated": len(data.y_train) < CIFAR_TRAIN or epochs < recipe.epochs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m archlore.benchmarks.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--recipe", default="nb201-12")
    p.add_argument("--train-size", type=int, default=512, help="synthetic training images")
    p.add_argument("--epochs", type=int, default=1, help="epochs per timed run (the recipe's epochs are extrapolated)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--candidates", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--arch", default=BEST_C10)
    p.add_argument("--skip-ratio", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    recipe = load_recipe(args.recipe)
    data = synthetic(args.train_size)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    result: dict = {"device": name, "torch": torch.__version__, "recipe": recipe.name, "recipe_hash": recipe.hash(),
                    "model": recipe.model, "train_size": args.train_size, "epochs": args.epochs}
    if not args.skip_ratio:
        result["ratio"] = ratio(recipe=recipe, data=data, epochs=args.epochs, device=device, repeats=args.repeats, arch=args.arch)
        r = result["ratio"]
        print(f"{name}: archlore {r['archlore_images_per_s']:.0f} img/s, plain loop {r['plain_images_per_s']:.0f} img/s, "
              f"ratio {r['ratio']:.2f}x ({args.train_size} images x {args.epochs} epoch(s), median of {args.repeats})")
    if args.candidates:
        c = candidates_per_hour(recipe=recipe, data=data, epochs=args.epochs, device=device,
                                candidates=args.candidates, concurrency=args.concurrency)
        result["candidates_per_hour"] = c
        print(f"{name}: {c['candidates_per_hour']:.2f} candidates/hour at {recipe.name} "
              f"({c['seconds_per_full_candidate']:.0f} s per candidate; {c['train_images_per_s']:.0f} train img/s, "
              f"concurrency {args.concurrency}{', extrapolated from a subset' if c['extrapolated'] else ''})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
