"""Training batches built ahead: one way for every data adapter (``data.prefetch``,
``data.num_workers``).

An adapter splits a step's batch into two halves:

* ``payload(epoch, step)``: the rank's numpy arrays of global step ``step`` (torch-free, no
  collective): it may run in a forked worker process (``num_workers > 0``) or a thread;
* ``to_batch(payload)``: tensors, KJTs and any collective of the batch assembly, in the trainer.

:class:`PayloadTraining` turns the pair into ``train_batches(epoch, start_step)``: inline when
``prefetch == 0``; otherwise ``prefetch`` payloads ahead, in a worker process when
``num_workers > 0`` (its own interpreter: no GIL contention with the trainer) else in a thread.
Payloads are functions of (epoch, step), so a resumed epoch builds no earlier one, and the
batches are the same whichever way they were produced.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from distrec.data.loader import Prefetcher, ProcessPrefetcher


class PayloadTraining:
    """Mixin of a TaskData: ``train_batches`` from ``payload`` / ``to_batch`` (module doc).

    Counters: ``built[epoch] = [first step, last step, batches handed out]`` (resume tests) and
    ``data_wait_seconds`` (time the trainer waited for a payload).
    """

    prefetch: int = 0
    workers: int = 0

    def init_prefetch(self, prefetch: int = 0, workers: int = 0) -> None:
        """Set ``data.prefetch`` / ``data.num_workers`` (the engine calls it with the config's)."""
        self.prefetch, self.workers = max(0, prefetch), max(0, workers)
        if not hasattr(self, "built"):
            self.built: dict[int, list[int]] = {}
            self.wait_seconds = 0.0  # summed over finished epochs' prefetchers
            self._active: Prefetcher[Any] | ProcessPrefetcher[Any] | None = None

    def num_train_steps(self, epoch: int) -> int:
        raise NotImplementedError

    def payload(self, epoch: int, step: int) -> Any:
        """This rank's numpy payload of global step ``step`` (torch-free)."""
        raise NotImplementedError

    def to_batch(self, payload: Any) -> Any:
        """The Batch of a payload (tensors; collectives of the batch assembly go here)."""
        raise NotImplementedError

    def warm(self, epoch: int, step: int) -> None:
        """Load what the payload of (epoch, step) reads first (the engine calls it once, before
        the first epoch's timer); a no-op for adapters that hold their tables in memory."""

    def after_epoch(self, epoch: int) -> None:
        """Called by the producer after the last payload of ``epoch`` (e.g. warm the next one)."""

    def _payloads(self, epoch: int, start_step: int = 0) -> Iterator[tuple[int, Any]]:
        for step in range(start_step, self.num_train_steps(epoch)):
            yield step, self.payload(epoch, step)
        self.after_epoch(epoch)

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Any]:
        """This rank's batches of ``epoch`` from ``start_step`` on. The producer starts when this
        is called, not at the first ``next``: the first payloads are built while the trainer sets
        the epoch up."""
        self.init_prefetch(self.prefetch, self.workers)
        if self.prefetch <= 0:
            return self._inline(epoch, start_step)
        if self._active is not None:  # an epoch's iterator dropped unfinished
            self._active.close()
            self.wait_seconds += self._active.wait_seconds
        pf: Prefetcher[Any] | ProcessPrefetcher[Any]
        if self.workers > 0:
            pf = ProcessPrefetcher(lambda: self._payloads(epoch, start_step), depth=self.prefetch)
        else:
            pf = Prefetcher(self._payloads(epoch, start_step), depth=self.prefetch)
        self._active = pf
        return self._drain(pf, epoch)

    def _inline(self, epoch: int, start_step: int) -> Iterator[Any]:
        for step, p in self._payloads(epoch, start_step):
            self._count(epoch, step)
            yield self.to_batch(p)

    def _drain(self, pf: Prefetcher[Any] | ProcessPrefetcher[Any], epoch: int) -> Iterator[Any]:
        try:
            for step, p in pf:
                self._count(epoch, step)
                yield self.to_batch(p)
        finally:
            pf.close()
            if self._active is pf:
                self.wait_seconds += pf.wait_seconds
                self._active = None

    def _count(self, epoch: int, step: int) -> None:
        c = self.built.setdefault(epoch, [step, step, 0])
        c[1], c[2] = step, c[2] + 1

    @property
    def data_wait_seconds(self) -> float:
        """Total time the trainer waited for payloads so far (including the running epoch)."""
        self.init_prefetch(self.prefetch, self.workers)
        return self.wait_seconds + (self._active.wait_seconds if self._active else 0.0)
