"""Rank sharding of an epoch's rows, and a background-thread batch prefetcher. Torch-free.

The invariant that makes multi-rank runs comparable with single-rank runs: global batch ``t`` of
an epoch is the same set of rows whatever the world size, and rank ``r`` takes the ``r``-th
contiguous slice of it. Every rank runs the same number of steps (collectives would hang
otherwise): the last, partial global batch is filled up by wrapping around to the start of the
epoch's permutation, unless ``drop_last``.

Shapes: R rows, G global batch, W world size; a rank slice has G // W rows (+1 for the first
G % W ranks).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")


def step_rng(seed: int, epoch: int, step: int, stream: int = 0) -> np.random.Generator:
    """Generator seeded from (seed, epoch, global step, stream): identical on every rank and for
    every world size, so per-step randomness (negatives, neighbour samples) does not depend on W."""
    return np.random.default_rng([seed, epoch, step, stream])


def num_steps(num_rows: int, global_batch: int, drop_last: bool = False) -> int:
    """Steps per epoch; the same on every rank."""
    if global_batch <= 0:
        raise ValueError(f"global batch must be positive, got {global_batch}")
    return num_rows // global_batch if drop_last else -(-num_rows // global_batch)


def rank_slice(global_batch: int, rank: int, world: int) -> slice:
    """The contiguous part of a global batch that ``rank`` of ``world`` takes."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world of size {world}")
    lo = rank * global_batch // world
    hi = (rank + 1) * global_batch // world
    return slice(lo, hi)


def eval_sample(num_queries: int, max_users: int, seed: int, split: str) -> np.ndarray | None:
    """Sorted positions [min(n, max_users)] of a seeded uniform sample of a split's ``n`` eval
    queries (``eval.max_users``), or None for all of them (max_users <= 0 or >= n). Seeded by
    (seed, split) only: the same sample on every rank and at every world size."""
    if max_users <= 0 or max_users >= num_queries:
        return None
    salt = sum(split.encode())  # a stable per-split stream (hash() is salted per process)
    rng = np.random.default_rng([seed, 0xE5A, salt])
    return np.sort(rng.choice(num_queries, size=max_users, replace=False)).astype(np.int64)


def query_keys(ids: np.ndarray, seed: int, split: str) -> np.ndarray:
    """uint64 sort keys [n] of query ids ``ids`` [n] for the ``eval.max_users`` sample of a
    split whose queries are spread over ranks: a seeded bijection of the id (the splitmix64
    finaliser of id + salt(seed, split)), so distinct ids get distinct keys, and the sample
    "the max_users smallest keys" is a seeded uniform one that every rank decides for its own
    ids, whatever the world size (:func:`distrec.data.heldout.plan_queries`)."""
    salt = np.random.default_rng([seed, 0xE5A, sum(split.encode())]).integers(0, 2**63)
    with np.errstate(over="ignore"):  # the arithmetic is modulo 2^64 on purpose
        z = np.asarray(ids, dtype=np.int64).astype(np.uint64) + np.uint64(salt)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def global_batches(
    num_rows: int, global_batch: int, seed: int, epoch: int, *, drop_last: bool = False
) -> list[np.ndarray]:
    """All global batches of ``epoch``: row indices int64 [G] each, from a permutation seeded by
    (seed, epoch). Without ``drop_last`` the last batch wraps around so every batch has G rows
    (when R >= G; a dataset smaller than one batch is repeated)."""
    steps = num_steps(num_rows, global_batch, drop_last)
    if num_rows == 0 or steps == 0:
        return []
    perm = np.random.default_rng([seed, epoch, 0xE0C]).permutation(num_rows).astype(np.int64)
    need = steps * global_batch
    if need > num_rows:
        perm = np.resize(perm, need)  # np.resize repeats the permutation from its start
    return [perm[t * global_batch : (t + 1) * global_batch] for t in range(steps)]


def epoch_indices(
    num_rows: int,
    global_batch: int,
    rank: int,
    world: int,
    seed: int,
    epoch: int,
    *,
    drop_last: bool = False,
) -> list[np.ndarray]:
    """Row indices of ``rank`` for each step of ``epoch``: a list of int64 arrays [~G/W]."""
    sl = rank_slice(global_batch, rank, world)
    return [b[sl] for b in global_batches(num_rows, global_batch, seed, epoch, drop_last=drop_last)]


class RankShard:
    """The rows one rank reads in each epoch: a thin object over :func:`epoch_indices`.

    Example::

        shard = RankShard(num_rows=10_000, global_batch=1024, rank=1, world=2, seed=0)
        shard.num_steps()            # 10, on both ranks
        shard.indices(epoch=3)[0]    # rows 512..1023 of global batch 0 of epoch 3
    """

    def __init__(
        self,
        num_rows: int,
        global_batch: int,
        rank: int,
        world: int,
        seed: int,
        *,
        drop_last: bool = False,
    ) -> None:
        if global_batch < world:
            raise ValueError(f"global batch {global_batch} is smaller than the world size {world}")
        self.num_rows, self.global_batch = num_rows, global_batch
        self.rank, self.world, self.seed, self.drop_last = rank, world, seed, drop_last
        self.slice = rank_slice(global_batch, rank, world)

    def num_steps(self) -> int:
        return num_steps(self.num_rows, self.global_batch, self.drop_last)

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        return global_batches(
            self.num_rows, self.global_batch, self.seed, epoch, drop_last=self.drop_last
        )

    def indices(self, epoch: int) -> list[np.ndarray]:
        return [b[self.slice] for b in self.global_batches(epoch)]


_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetcher(Generic[T]):
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead.

    ``wait_seconds`` accumulates the time the consumer spent blocked in ``__next__`` (the data
    wait of a training step). An exception in the producer is re-raised in the consumer.
    Stopping early (``close()``, or leaving a ``with`` block) ends the thread.

    Example::

        with Prefetcher(make_batches(), depth=2) as it:
            for batch in it:
                train_step(batch)
        it.wait_seconds
    """

    def __init__(self, iterable: Iterable[T], depth: int = 2) -> None:
        self.wait_seconds = 0.0
        self.produce_seconds = 0.0  # time the producer spent building items
        self._q: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._source = iter(iterable)
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="distrec-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    item = next(self._source)
                except StopIteration:
                    break
                self.produce_seconds += time.perf_counter() - t0
                if not self._put(item):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(_Failure(e))
            return
        self._put(_DONE)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        t0 = time.perf_counter()
        item = self._q.get()
        self.wait_seconds += time.perf_counter() - t0
        if item is _DONE:
            self._finished = True
            self._thread.join()
            raise StopIteration
        if isinstance(item, _Failure):
            self._finished = True
            self._thread.join()
            raise item.exc
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the producer thread (safe to call twice)."""
        self._stop.set()
        self._finished = True
        self._thread.join(timeout=5)
        close = getattr(self._source, "close", None)
        if callable(close) and not self._thread.is_alive():
            close()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _worker(
    make_iterable: Callable[[], Iterable[object]],
    q: Any,
    stop: Any,
) -> None:
    """Body of the :class:`ProcessPrefetcher` child: produce, hand over, stop when asked."""

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in make_iterable():
            if not put(item):
                return
    except BaseException:  # noqa: BLE001 - exceptions may not pickle: send the traceback text
        put(("__distrec_error__", traceback.format_exc()))
        return
    put(("__distrec_done__", None))


class ProcessPrefetcher(Generic[T]):
    """Like :class:`Prefetcher`, but the items are produced in a forked child process.

    Why: a producer thread shares the GIL with the trainer's Python-heavy TorchRec code; a child
    process has its own interpreter (on a machine with a spare core per rank). On the shared
    2-core sandbox neither variant beat building batches inline (docs/results/data.md). Items cross a pipe pickled, so produce small numpy payloads
    and build tensors in the consumer. ``fork`` keeps the parent's arrays (copy-on-write) and needs
    no pickling of ``make_iterable``; the child must not use torch or the process group.
    """

    def __init__(self, make_iterable: Callable[[], Iterable[T]], depth: int = 2) -> None:
        ctx = mp.get_context("fork")
        self.wait_seconds = 0.0
        self._q = ctx.Queue(maxsize=max(1, depth))
        self._stop = ctx.Event()
        self._finished = False
        self._proc = ctx.Process(
            target=_worker,
            args=(make_iterable, self._q, self._stop),
            daemon=True,
            name="distrec-data",
        )
        self._proc.start()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        t0 = time.perf_counter()
        while True:
            try:
                item = self._q.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._proc.is_alive():
                    self.close()
                    raise RuntimeError(
                        f"data worker process died (exit code {self._proc.exitcode})"
                    ) from None
        self.wait_seconds += time.perf_counter() - t0
        if isinstance(item, tuple) and len(item) == 2 and item[0] == "__distrec_done__":
            self.close()
            raise StopIteration
        if isinstance(item, tuple) and len(item) == 2 and item[0] == "__distrec_error__":
            self.close()
            raise RuntimeError(f"data worker failed:\n{item[1]}")
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop and reap the child (safe to call twice)."""
        if self._finished and not self._proc.is_alive():
            return
        self._finished = True
        self._stop.set()
        self._q.cancel_join_thread()
        deadline = time.monotonic() + 5
        while self._proc.is_alive() and time.monotonic() < deadline:
            try:  # drain so a child blocked on a full pipe can see the stop flag
                self._q.get(timeout=0.05)
            except queue.Empty:
                pass
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join(timeout=5)

    def __enter__(self) -> ProcessPrefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
