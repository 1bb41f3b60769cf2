"""Evaluate candidates on a Ray cluster: each candidate a Ray task, results back as they finish.

`RayExecutor` wraps any executor (the training one, the tabular one): it puts the wrapped executor,
data set included, into Ray's object store once (Ray ships it to each node once; the tasks get a
reference, not a copy per task), and runs each candidate as a task that asks for `num_gpus`
(1, or a fraction to pack several small candidates on one GPU) or `num_cpus` on a CPU cluster.

What may go wrong, and what happens:

- a worker (or its node) dies: Ray runs the task again, up to `max_retries` times (Ray's own
  retry option); a finished result is already in the driver's hands and never run again;
- the candidate fails for its own reasons (out of memory, NaN metrics, a builder error): the task
  *returns* `Metrics.failed(reason)` instead of raising, so Ray does not retry it, and the
  evaluator records it once, as failed (the caller's own errors, such as a malformed cell, are
  returned too and raised on the driver, as a local executor would raise them);
- the driver is killed: the tasks die with it (a local cluster shares the driver's fate), what was
  recorded stays recorded, and a resumed run proposes again from the ledger.

The budget side is the evaluator's: `Evaluator.evaluate_many` refuses a batch over the budget
left, never submits a cell already in the ledger, and records each result the moment
`RayExecutor.as_completed` yields it.

`connect("local" | "auto" | "ray://HOST:PORT")` starts or joins the cluster; Ray is an optional
dependency (``pip install 'archlore[ray]'``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import (
    ArchloreError,
    ConfigError,
    DataError,
    SpaceError,
)
from .executors import Executor, Metrics
from .spaces import Arch

log = logging.getLogger(__name__)

#: How often Ray runs a task again after its worker died (not after the candidate itself failed).
MAX_RETRIES = 3


@dataclass(frozen=True)
class _Raised:
    """An error that is the caller's (a malformed cell, a table without the cell): re-raised on
    the driver as a local executor would raise it, never retried."""

    error: BaseException


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--cluster needs Ray: pip install 'archlore[ray]'") from None
    return ray


def check_cluster(cluster: str) -> str:
    if cluster in ("local", "auto") or cluster.startswith("ray://"):
        return cluster
    raise ConfigError(f"unknown --cluster {cluster!r}: use local, auto or ray://HOST:PORT")


def connect(cluster: str = "local", *, num_cpus: int | None = None, num_gpus: int | None = None,
            object_store_mb: int | None = None) -> None:
    """Start (``local``) or join (``auto``, ``ray://HOST:PORT``) a Ray cluster, once per process.

    `num_cpus`/`num_gpus` size a local cluster (default: what the machine has); joining takes
    the cluster as it is.
    """
    ray = _ray()
    check_cluster(cluster)
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if cluster == "local":
        kwargs.update(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False)
        if object_store_mb:
            kwargs["object_store_memory"] = object_store_mb * 2**20
        address = None
    else:
        address = cluster
    # a ray:// client's first connect can fail while the head starts its per-client server process
    # ("Initialization failure from server", seen on a busy 2-core machine): try it three times
    attempts = 3 if address and address.startswith("ray://") else 1
    for attempt in range(attempts):
        try:
            ray.init(address=address, **kwargs)
            break
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if attempt + 1 < attempts and "Initialization failure" in str(exc):
                log.warning("joining %s failed (%s); trying again", cluster, str(exc).splitlines()[0][:200])
                with contextlib.suppress(Exception):
                    ray.shutdown()
                time.sleep(2.0 * (attempt + 1))
                continue
            raise ArchloreError(f"cannot start or join the Ray cluster {cluster!r}: {str(exc).splitlines()[0][:200]}") from None
    log.info("Ray cluster %s: %s", cluster, ray.cluster_resources())


def shutdown() -> None:
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()


def _open_cache(path: str) -> Any:
    from .train_cache import TrainCache

    return TrainCache(path)


def dumps_executor(executor: Any) -> bytes:
    """The executor as bytes for the object store (cloudpickle, by value).

    What an executor holds that cannot be pickled travels as what rebuilds it on the worker: a
    lock as a fresh lock, the training cache (an open SQLite file) as its path, opened again
    there (the same file on this machine or a shared disk; a node's own file elsewhere). Done
    here rather than with Ray's serializer registry, which a `ray://` client does not use.
    """
    import io

    from ray import cloudpickle

    from .train_cache import TrainCache

    locks = {type(threading.Lock()): threading.Lock, type(threading.RLock()): threading.RLock}

    class _Pickler(cloudpickle.CloudPickler):
        def reducer_override(self, obj: Any) -> Any:
            make = locks.get(type(obj))
            if make is not None:
                return make, ()
            if isinstance(obj, TrainCache):
                return _open_cache, (str(obj.path),)
            return super().reducer_override(obj)

    buf = io.BytesIO()
    _Pickler(buf, protocol=5).dump(executor)
    return buf.getvalue()


_EXECUTORS: dict[str, Any] = {}  # per worker process: each shipped executor is unpickled once


def _executor(key: str, blob: bytes) -> Any:
    ex = _EXECUTORS.get(key)
    if ex is None:
        import pickle

        ex = _EXECUTORS[key] = pickle.loads(blob)
    return ex


def _task_has_gpu() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized() and bool(ray.get_gpu_ids())


def _run_candidate(key: str, blob: bytes, arch: Arch, epochs: int | None, threads: int | None) -> Metrics | _Raised:
    """The Ray task's body. The candidate's own failures come back as values, never as
    exceptions, so Ray never retries them: `Metrics.failed` (out of memory, NaN, a builder error)
    or `_Raised` (the caller's error, re-raised on the driver)."""
    import time

    executor = _executor(key, blob)

    if threads:
        import torch

        torch.set_num_threads(threads)
    if _task_has_gpu():  # the driver may have no GPU: the trainer's device is chosen here
        import torch

        for target in (executor, getattr(executor, "inner", None)):
            if getattr(target, "device", None) is not None:
                target.device = torch.device("cuda")  # Ray set CUDA_VISIBLE_DEVICES to this task's GPU
    start = time.perf_counter()
    try:
        m = executor.evaluate(arch) if epochs is None else executor.evaluate(arch, epochs=epochs)  # type: ignore[call-arg]
    except (SpaceError, DataError, ConfigError) as exc:
        return _Raised(exc)
    except MemoryError:
        return Metrics.failed("out of memory (host)", wall_time=time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - OOM on a device, a builder's error: the candidate's own
        name = type(exc).__name__
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        oom = "OutOfMemory" in name or "out of memory" in text.lower() or "can't allocate memory" in text
        return Metrics.failed(f"out of memory: {name}: {text}" if oom else f"{name}: {text}",
                              wall_time=time.perf_counter() - start)
    if m.ok and not math.isfinite(m.valid):
        return Metrics.failed(f"non-finite validation metric ({m.valid})", wall_time=m.wall_time, fidelity=m.fidelity)
    return m


class RayExecutor:
    """An `Executor` whose evaluations run as Ray tasks (see the module docstring).

    `evaluate` runs one candidate; `as_completed` runs many at once and yields ``(index, Metrics)``
    in the order they finish (what `Evaluator.evaluate_many` records from); `evaluate_many`
    returns them in the order asked, like `TrainingExecutor.evaluate_many`.

    The executor travels as `dumps_executor` makes it (a lock anew, the training cache by path).
    """

    def __init__(
        self,
        inner: Executor,
        *,
        cluster: str = "local",
        num_gpus: float | None = 0.0,
        num_cpus: float = 1.0,
        max_retries: int = MAX_RETRIES,
        threads: int | None = 1,
        workers: int | None = None,
    ) -> None:
        if (num_gpus or 0) < 0 or num_cpus < 0 or (not num_gpus and num_cpus == 0):
            raise ConfigError("a candidate needs some CPU or GPU: num_cpus or num_gpus must be positive")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be at least 0, got {max_retries}")
        ray = _ray()
        self.inner = inner
        self.space = inner.space
        self.task = inner.task
        self.cluster = check_cluster(cluster)
        connect(cluster, num_cpus=workers)
        have_gpus = ray.cluster_resources().get("GPU", 0)
        if num_gpus is None:  # one GPU per candidate where the cluster has GPUs
            num_gpus = 1.0 if have_gpus >= 1 else 0.0
        if num_gpus > max(have_gpus, 0) or (num_gpus and not have_gpus):
            # Ray would keep such a task waiting forever for a GPU that never comes
            raise ConfigError(
                f"a candidate asks for {num_gpus:g} GPU(s) but the Ray cluster has {have_gpus:g}: "
                "pass --candidate-gpus 0 (CPU) or join a cluster with GPUs"
            )
        self.num_gpus, self.num_cpus = float(num_gpus), float(num_cpus)
        self._key = uuid.uuid4().hex
        self._inner_ref = ray.put(dumps_executor(inner))  # the data set goes into the object store once
        # retry_exceptions=False: an exception is the candidate's own failure, never retried
        self._task = ray.remote(_run_candidate).options(
            num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries, retry_exceptions=False,
        )
        self._threads = threads
        self.max_retries = max_retries

    def __repr__(self) -> str:
        return f"RayExecutor({self.inner!r}, cluster={self.cluster!r})"

    def __getattr__(self, name: str) -> Any:
        # what else the wrapped executor offers (a partial table's `known()`...) passes through
        if name.startswith("_") or "inner" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["inner"], name)

    @property
    def parallelism(self) -> int:
        """How many candidates the cluster runs at once: the search proposes batches this large."""
        res = _ray().cluster_resources()
        slots = res.get("GPU", 0) / self.num_gpus if self.num_gpus else res.get("CPU", 1) / max(self.num_cpus, 1e-9)
        return max(1, int(slots + 1e-9))

    def evaluate(self, arch: Arch, epochs: int | None = None) -> Metrics:
        for _, m in self.as_completed([arch], epochs):
            return m
        raise AssertionError("unreachable")

    def evaluate_many(self, archs: Sequence[Arch], epochs: int | None = None) -> list[Metrics]:
        """All at once; metrics in the order of `archs` (as `TrainingExecutor.evaluate_many`)."""
        out: list[Metrics | None] = [None] * len(archs)
        for i, m in self.as_completed(archs, epochs):
            out[i] = m
        return out  # type: ignore[return-value]

    def as_completed(self, archs: Sequence[Arch], epochs: int | None = None) -> Iterator[tuple[int, Metrics]]:
        """Submit every candidate as a task; yield ``(index, metrics)`` as each finishes.

        A task whose worker died is run again by Ray (`max_retries`); after the last retry the
        candidate comes back failed ("worker lost"). The caller's errors are raised here.
        Stopping early (the budget, Ctrl-C) cancels what is still running.
        """
        ray = _ray()
        from ray.exceptions import RayError

        refs = {self._task.remote(self._key, self._inner_ref, tuple(a), epochs, self._threads): i for i, a in enumerate(archs)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        result = ray.get(ref)
                    except RayError as exc:  # retries spent: the worker kept dying (killed, OOM-killed)
                        result = Metrics.failed(f"worker lost after {self.max_retries} retries: {type(exc).__name__}")
                    if isinstance(result, _Raised):
                        raise result.error
                    yield refs[ref], result
        finally:
            for ref in pending:  # nothing keeps running for a caller that stopped
                ray.cancel(ref, force=True)


def worker_pids() -> list[int]:
    """PIDs of this machine's Ray workers that are running one of our candidates (for tests)."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as fh:
                    if fh.read().startswith(b"ray::_run_candidate"):
                        pids.append(int(d))
            except OSError:
                continue
    return pids


def map_tasks(fn: Callable[..., Any], items: Sequence[tuple], *, common: tuple = (), cluster: str = "local",
              num_cpus: float = 1.0) -> list[Any]:
    """`[fn(*common, *item) for item in items]`, each call a Ray task, results in order.

    `common` (a table, a protocol) is put into the object store once and handed to every task by
    reference: for work that is many independent runs (the seeds of a benchmark) rather than
    one search's candidates.
    """
    ray = _ray()
    connect(cluster)
    refs = [ray.put(c) for c in common]
    task = ray.remote(fn).options(num_cpus=num_cpus, max_retries=MAX_RETRIES, retry_exceptions=False)
    return ray.get([task.remote(*refs, *item) for item in items])
