"""Train a NAS-Bench-201-shaped cell network for real: the model, the datasets and the executor.

Three parts, top to bottom:

- the model: NB201's ops, the cell (node j sums op_ij(node i) over i < j) and a small macro
  network (stem, stages of cells joined by residual reduction blocks, pooled linear head). It is
  built from a tuple of op names, so any space whose cell has NB201's shape (NB201, TransNAS
  micro) can use it; the genotype stays a plain immutable tuple until `CellNetwork` is built.
- the datasets: a small registry `DATASETS` of loaders returning fixed train/valid/test splits.
- `TrainingExecutor`: the `Executor` that builds, trains and scores one architecture.

The defaults are sized so one candidate trains in a few seconds on two CPU cores and the cell
still matters (see `benchmarks/digits_spread.py` for the measured spread).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, SpaceError
from .executors import Metrics
from .spaces import NB201_EDGES, NB201_OPS, Arch, NB201Space, SearchSpace

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# model: ops, cell, network

#: NB201 edge order as (target node, source node); matches `NB201_EDGES` ("1<-0", "2<-0", ...).
EDGES: tuple[tuple[int, int], ...] = tuple(
    (int(t), int(s)) for t, s in (e.split("<-") for e in NB201_EDGES)
)
N_NODES = 4
#: The ops this module builds (NB201's five; TransNAS micro uses the first four).
OPS = NB201_OPS


class ReLUConvBN(nn.Sequential):
    """NB201's conv op: ReLU, then a bias-free conv, then batch norm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The `none` op: the edge carries nothing (kept as x*0 so shapes and devices follow x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(name: str, channels: int) -> nn.Module:
    """One NB201 op on `channels` channels at stride 1 (cell edges never change the shape)."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise SpaceError(f"unknown op {name!r}: use one of {', '.join(OPS)}")



class Cell(nn.Module):
    """A 4-node NB201 cell: node 0 is the input, node j = sum_{i<j} op_ij(node i), node 3 out."""

    def __init__(self, ops: Sequence[str], channels: int) -> None:
        super().__init__()
        if len(ops) != len(EDGES):
            raise SpaceError(f"a cell needs {len(EDGES)} ops (one per edge), got {len(ops)}")
        self.edges = nn.ModuleList(make_op(op, channels) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in range(1, N_NODES):
            nodes.append(
                sum(op(nodes[i]) for op, (t, i) in zip(self.edges, EDGES) if t == j)  # type: ignore[misc]
            )
        return nodes[-1]


class ResidualReduction(nn.Module):
    """NB201's reduction block: two ReLU-Conv-BN 3x3 (the first at stride 2) plus a pooled
    1x1 shortcut; halves the resolution and changes the channel count."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class CellNetwork(nn.Module):
    """NB201's macro skeleton: stem conv+BN, three stages of `cells_per_stage` cells at C, 2C,
    4C channels joined by residual reductions, then BN-ReLU, global average pool and a linear
    head. (NB201 itself uses C=16 and 5 cells per stage on 32x32 images.)"""

    def __init__(
        self,
        ops: Sequence[str],
        *,
        in_channels: int,
        num_classes: int,
        channels: int = 16,
        cells_per_stage: int = 1,
        stages: int = 3,
    ) -> None:
        super().__init__()
        self.ops = tuple(ops)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        ]
        c = channels
        for s in range(stages):
            if s > 0:
                layers.append(ResidualReduction(c, 2 * c))
                c *= 2
            layers.extend(Cell(self.ops, c) for _ in range(cells_per_stage))
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def reaches_output(ops: Sequence[str]) -> bool:
    """Whether some path of non-`none` edges joins the input (node 0) to the output (node 3).

    When none does, the cell outputs zeros whatever its input, and the network can only learn
    the class prior: it trains to chance accuracy, as such cells do in NB201's own tables."""
    reached = {0}
    for (t, s), op in sorted(zip(EDGES, ops)):
        if op != "none" and s in reached:
            reached.add(t)
    return N_NODES - 1 in reached


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, sample: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of one sample through convs and linears (the
    convention NB201's `flops` column follows); pooling, BN and additions are not counted."""
    total = 0

    def hook(mod: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += out[0].numel() * k
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(sample[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


# ---------------------------------------------------------------------------------------------
# datasets


@dataclass(frozen=True)
class Dataset:
    """A fixed train/valid/test split as float images (N, C, H, W) and int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])


DIGITS_SPLIT_SEED = 0  # the split never depends on the training seed: every run sees the same data


@functools.lru_cache(maxsize=1)
def load_digits_dataset() -> Dataset:
    """scikit-learn's bundled digits (1,797 8x8 grey images, 10 classes), split 60/20/20,
    stratified, with a fixed seed; standardised with the training set's mean and std."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    x_valid, x_test, y_valid, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=DIGITS_SPLIT_SEED
    )
    mean, std = float(x_train.mean()), float(x_train.std())

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    return Dataset(
        "digits",
        t((x_train - mean) / std), t(y_train),
        t((x_valid - mean) / std), t(y_valid),
        t((x_test - mean) / std), t(y_test),
        num_classes=10,
    )


#: Training tasks by name. A loader takes no arguments and returns a (cached) `Dataset`.
DATASETS: dict[str, Callable[[], Dataset]] = {"digits": load_digits_dataset}

#: Tasks that a later loader will read through torchvision (which downloads the data itself).
_TORCHVISION_TASKS = ("cifar10", "cifar100", "imagenet16-120")


def check_task(task: str) -> str:
    if task in DATASETS:
        return task
    available = ", ".join(sorted(DATASETS))
    if task.lower() in _TORCHVISION_TASKS:
        raise ConfigError(
            f"task {task!r} needs torchvision: install it (pip install torchvision) and register a "
            f"loader in archlore.tools.training.DATASETS; none is built in yet. "
            f"Available training tasks: {available}"
        )
    raise ConfigError(f"unknown training task {task!r}: use one of {available}")


# ---------------------------------------------------------------------------------------------
# executor


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


class TrainingExecutor:
    """Builds the cell network of an architecture and trains it on `task`.

    SGD with Nesterov momentum and a cosine schedule, as NB201 trains, but for a few epochs on a
    small dataset. The model is initialised and the batches shuffled from `seed` alone (the
    caller's global torch RNG is left as it was), so on CPU the same (arch, seed) gives the same
    metrics. `valid` and `test` are accuracies in percent on the fixed splits.

    `threads` sets torch's intra-op threads for the evaluation (and restores them after); None
    leaves torch's default (one per core). The convolutions here are tiny, so one thread is
    usually as fast, and on a busy 2-core machine several times faster (OpenMP threads wait on
    each other): pass threads=1 there. Results are reproducible for a fixed thread count; a
    different count may change the last digits of the floating-point sums and so the metrics.
    """

    def __init__(
        self,
        space: SearchSpace | None = None,
        task: str = "digits",
        *,
        epochs: int = 3,
        channels: int = 8,
        cells_per_stage: int = 1,
        batch_size: int = 64,
        lr: float = 0.05,
        weight_decay: float = 5e-4,
        seed: int = 0,
        device: str | torch.device | None = None,
        threads: int | None = None,
    ) -> None:
        self.space = space if space is not None else NB201Space()
        self.task = check_task(task)
        for name, value in (("epochs", epochs), ("channels", channels),
                            ("cells_per_stage", cells_per_stage), ("batch_size", batch_size)):
            if int(value) < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if lr <= 0:
            raise ConfigError(f"lr must be positive, got {lr}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be at least 1 (or None for torch's default), got {threads}")
        self._check_space(self.space)
        self.epochs = int(epochs)
        self.channels = int(channels)
        self.cells_per_stage = int(cells_per_stage)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.seed = int(seed)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.threads = threads
        self.data = DATASETS[self.task]()  # loaded (and cached) now, so wall times are training only

    @staticmethod
    def _check_space(space: SearchSpace) -> None:
        if len(space.positions) != len(EDGES) or any(c not in OPS for p in space.positions for c in p.choices):
            raise ConfigError(
                f"space {space.name!r} is not an NB201-shaped cell: TrainingExecutor trains spaces "
                f"with {len(EDGES)} edges whose choices are among {', '.join(OPS)} (nb201, tnb101)"
            )

    def __repr__(self) -> str:
        return (
            f"TrainingExecutor({self.space.name!r}, {self.task!r}, epochs={self.epochs}, "
            f"channels={self.channels}, cells_per_stage={self.cells_per_stage}, device={self.device})"
        )

    def ops_of(self, arch: Arch) -> tuple[str, ...]:
        """The genotype as op names, in NB201 edge order (raises SpaceError if it does not fit)."""
        arch = self.space.validate(arch)
        return tuple(p.choices[a] for p, a in zip(self.space.positions, arch))

    def build(self, arch: Arch) -> CellNetwork:
        """The untrained network of `arch` (initialised from torch's global RNG)."""
        return CellNetwork(
            self.ops_of(arch), in_channels=self.data.in_channels, num_classes=self.data.num_classes,
            channels=self.channels, cells_per_stage=self.cells_per_stage,
        )

    def evaluate(self, arch: Arch) -> Metrics:
        start = time.perf_counter()
        arch = self.space.validate(arch)  # before any work
        data = self.data
        fork_devices = []  # fork_rng forks the CPU generator always, CUDA ones by index
        if self.device.type == "cuda":
            idx = self.device.index
            fork_devices = [idx if idx is not None else torch.cuda.current_device()]
        with _torch_threads(self.threads), torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(self.seed)
            model = self.build(arch).to(self.device)
            flops = count_flops(model, data.x_valid.to(self.device))
            train_seconds = self._train(model, data)
            valid = _accuracy(model, data.x_valid, data.y_valid, self.device)
            test = _accuracy(model, data.x_test, data.y_test, self.device)
        wall = time.perf_counter() - start
        n_params = count_params(model)
        log.debug(
            "trained %s on %s: valid %.2f test %.2f in %.1fs",
            self.space.to_string(arch), self.task, valid, test, wall,
        )
        cost = {
            "params": float(n_params),
            "flops": float(flops),
            "params_mb": n_params / 1e6,  # the units of the NB201 table's cost columns
            "flops_m": flops / 1e6,
            "train_seconds": train_seconds,
        }
        return Metrics(valid=valid, test=test, cost=cost, wall_time=wall)

    def _train(self, model: nn.Module, data: Dataset) -> float:
        start = time.perf_counter()
        x = data.x_train.to(self.device)
        y = data.y_train.to(self.device)
        n = len(y)
        steps_per_epoch = -(-n // self.batch_size)
        opt = torch.optim.SGD(
            model.parameters(), lr=self.lr, momentum=0.9, nesterov=True, weight_decay=self.weight_decay
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs * steps_per_epoch)
        loss_fn = nn.CrossEntropyLoss()
        gen = torch.Generator().manual_seed(self.seed)
        model.train()
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=gen).to(self.device)
            for b in range(steps_per_epoch):
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
                sched.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    model.eval()
    pred = model(x.to(device)).argmax(dim=1)
    return 100.0 * int((pred == y.to(device)).sum()) / len(y)
