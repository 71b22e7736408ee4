"""The training loop: epochs, pipelined or plain steps, validation, early stopping, checkpoints.

Logged losses are the mean over ranks of each rank's batch loss, i.e. the loss of the global
batch; rank 0 appends one JSON line per step to ``<run.dir>/train_log.jsonl`` (what the
distributed tests compare between world sizes).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from distrec.data.payloads import PayloadTraining
from distrec.distributed.checkpoint import (
    load_checkpoint,
    read_pointer,
    save_checkpoint,
)
from distrec.engine.runs import run_eval
from distrec.engine.session import Session, make_metrics
from distrec.models.api import Batch

# Key under which the optimised loss joins a step's logged terms (also distrec_loss{task="total"}).
TOTAL = "total"


def count_lookups(batch: Batch, features: dict[str, str]) -> dict[str, int]:
    """Embedding rows looked up per table in ``batch`` (ids per KJT key, keys mapped to tables)."""
    out: dict[str, int] = {}
    for kjt in batch.sparse.values():
        for key, n in zip(kjt.keys(), kjt.length_per_key()):
            t = features.get(key, key)
            out[t] = out.get(t, 0) + int(n)
    return out


class _Timed:
    """Iterator wrapper that measures the time spent waiting for the next batch."""

    def __init__(self, it: Iterator[Batch], skip: int = 0) -> None:
        self.it = it
        self.wait = 0.0
        self.last: Batch | None = None
        for _ in range(skip):  # resume mid-epoch: batches are deterministic, so drop the done ones
            next(self.it)

    def __iter__(self) -> _Timed:
        return self

    def __next__(self) -> Batch:
        t0 = time.perf_counter()
        try:
            b = next(self.it)
        finally:
            self.wait += time.perf_counter() - t0
        self.last = b
        return b


class Trainer:
    """Runs ``cfg.train.epochs`` epochs of ``session`` with evaluation and checkpoints."""

    def __init__(self, s: Session) -> None:
        self.s = s
        self.cfg = s.cfg
        self.metrics = make_metrics(s.cfg, s.env)
        self.global_step = 0
        self.epoch = 0
        self.step_in_epoch = 0
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.history: list[dict[str, Any]] = []
        self._pending: list[tuple[int, int, dict[str, torch.Tensor]]] = []
        self._epoch_loss = [0.0, 0]  # sum, steps of the running epoch (global-batch losses)

    # ------------------------------------------------------------------ state
    def _meta(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best": self.best,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "history": self.history,
            "model": self.cfg.model_name,
            **self._data_meta(),
        }

    def _data_meta(self) -> dict[str, Any]:
        """The data position (adapters that stream: epoch, step, layout and shard cursors of
        every rank, gathered; a collective, called on every rank at each checkpoint)."""
        state = getattr(self.s.data, "data_state", None)
        if state is None:
            return {}
        mine = state(self.epoch, self.step_in_epoch)
        shards = [mine.get("shards", {})]
        if dist.get_world_size() > 1:
            shards = [None] * dist.get_world_size()
            dist.all_gather_object(shards, mine.get("shards", {}))
        return {"data": {**mine, "shards": {k: v for d in shards for k, v in d.items()}}}

    def _resume(self) -> None:
        path = read_pointer(self.s.run_dir, "latest")
        if path is None:
            self.s.log.info("resume: no checkpoint in %s, starting fresh", self.s.run_dir)
            return
        meta = load_checkpoint(path, self.s.wrapped, self.s.optimizer)
        check = getattr(self.s.data, "check_state", None)
        if check is not None and "data" in meta:
            check(meta["data"])
        self.epoch, self.step_in_epoch = meta["epoch"], meta["step_in_epoch"]
        self.global_step = meta["global_step"]
        self.best, self.best_step = meta["best"], meta["best_step"]
        self.bad_evals, self.history = meta["bad_evals"], meta["history"]
        log_path = self.s.run_dir / "train_log.jsonl"
        if self.s.env.is_main and log_path.exists():  # drop steps the killed run logged after it
            keep = [
                ln
                for ln in log_path.read_text().splitlines()
                if json.loads(ln)["step"] <= self.global_step
            ]
            tmp = log_path.with_suffix(".tmp")
            tmp.write_text("".join(ln + "\n" for ln in keep))
            tmp.replace(log_path)
        self.s.log.info(
            "resumed from %s (saved at world size %s): epoch %d, step %d",
            path.name,
            meta.get("world_size"),
            self.epoch,
            self.global_step,
        )

    def _save(self, best: bool = False) -> None:
        secs = save_checkpoint(
            self.s.run_dir,
            self.global_step,
            self.s.wrapped,
            self.s.optimizer,
            self._meta(),
            keep=self.cfg.run.keep_checkpoints,
            best=best,
        )
        self.metrics.checkpoint(seconds=secs)
        self.s.log.info(
            "checkpoint step-%d (%.2fs)%s", self.global_step, secs, " best" if best else ""
        )

    # ---------------------------------------------------------------- logging
    def _flush_losses(self) -> float | None:
        """All-reduce the pending per-step losses (one collective) and log them on rank 0."""
        if not self._pending:
            return None
        names = sorted(self._pending[0][2])
        vals = torch.stack(
            [torch.stack([d[n].float().reshape(()) for n in names]) for _, _, d in self._pending]
        )
        if dist.get_world_size() > 1:
            dist.all_reduce(vals, op=dist.ReduceOp.SUM)
            vals /= dist.get_world_size()
        # Pipelined models return only their terms, which then must sum to the loss (MF does).
        totals = vals[:, names.index(TOTAL)] if TOTAL in names else vals.sum(1)
        if self.s.env.is_main:
            with open(self.s.run_dir / "train_log.jsonl", "a") as f:
                for (step, epoch, _), row, total in zip(
                    self._pending, vals.tolist(), totals.tolist()
                ):
                    parts = {n: v for n, v in zip(names, row) if n != TOTAL}
                    rec = {"step": step, "epoch": epoch, "loss": total, **parts}
                    f.write(json.dumps(rec) + "\n")
        self._pending = []
        self._epoch_loss[0] += float(totals.sum())
        self._epoch_loss[1] += vals.shape[0]
        return float(totals.mean())

    # ------------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        cfg, s = self.cfg, self.s
        if cfg.run.resume:
            self._resume()
        elif s.env.is_main:
            (s.run_dir / "train_log.jsonl").unlink(missing_ok=True)
        trainable = s.spec.trainable and s.optimizer is not None
        if trainable and cfg.train.pipeline and not s.model.pipelineable and s.env.is_main:
            # a fallback, not an error: train.pipeline (default true) means "pipeline when the
            # model allows it", and the graph and sequence models cannot be traced (see theirs)
            s.log.info(
                "train.pipeline: %s is not pipelineable (%s); training with plain steps",
                type(s.model).__name__,
                s.model.pipeline_blocker,
            )
        if trainable and isinstance(s.data, PayloadTraining):
            # the first payload's cold reads (window loads) happen here, before the epoch timer
            # (the producer warms every later epoch while the previous one finishes)
            t0 = time.perf_counter()
            s.data.warm(self.epoch, self.step_in_epoch)
            s.log.info("data warm-up (first windows) %.2fs", time.perf_counter() - t0)
        stop = False
        while trainable and self.epoch < cfg.train.epochs and not stop:
            stop = self._train_epoch()
            if stop and self.step_in_epoch != 0:
                break  # max_steps reached mid-epoch
            done_epoch = self.epoch
            self.epoch += 1
            self.step_in_epoch = 0
            self.metrics.epoch(self.epoch)
            if self.epoch % cfg.train.eval_every == 0 or self.epoch == cfg.train.epochs or stop:
                stop = self._validate(done_epoch) or stop
        if not trainable or self.best_step is None:
            self._save(best=True)  # nothing evaluated yet (or nothing to train): final = best
        self._write_data_stats()
        return self._final_test()

    def _write_data_stats(self) -> None:
        """``<run.dir>/data_stats/rank<r>.json``: the adapter's counters (rows read, batches
        built), when it has them; tests read them."""
        stats = getattr(self.s.data, "stats", None)
        if stats is None:
            return
        d = self.s.run_dir / "data_stats"
        d.mkdir(parents=True, exist_ok=True)
        out = {**stats(), "data_wait_seconds": float(getattr(self.s.data, "data_wait_seconds", 0))}
        (d / f"rank{self.s.env.rank}.json").write_text(json.dumps(out))

    def _train_epoch(self) -> bool:
        """One epoch (from step_in_epoch on); returns True when max_steps is reached."""
        cfg, s = self.cfg, self.s
        steps = s.data.num_train_steps(self.epoch)
        if "start_step" in inspect.signature(s.data.train_batches).parameters:
            # streaming adapters seek: no batch before step_in_epoch is built
            batches = s.data.train_batches(self.epoch, start_step=self.step_in_epoch)
            it = _Timed(iter(batches))
        else:
            it = _Timed(iter(s.data.train_batches(self.epoch)), skip=self.step_in_epoch)
        bar = tqdm(
            total=steps,
            initial=self.step_in_epoch,
            desc=f"epoch {self.epoch}",
            disable=not s.env.is_main,
            leave=False,
            dynamic_ncols=True,
        )
        s.wrapped.train()
        pipe = None
        if cfg.train.pipeline and s.model.pipelineable and s.wrapped is not s.model:
            from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

            pipe = TrainPipelineSparseDist(s.wrapped, s.optimizer, s.env.device)
        t_epoch, samples, reached = time.perf_counter(), 0, False
        self._epoch_loss = [0.0, 0]
        while True:
            t0, w0 = time.perf_counter(), it.wait
            try:
                if pipe is not None:
                    out = pipe.progress(it)
                    terms = out
                    batch = it.last
                else:
                    assert s.optimizer is not None
                    batch = next(it)
                    dev_batch = batch if s.env.device.type == "cpu" else batch.to(s.env.device)
                    loss, terms = s.wrapped(dev_batch)
                    # the terms are per-task/per-part values for logging (often unweighted);
                    # the logged total is the optimised loss itself
                    terms = {**terms, TOTAL: loss.detach()}
                    s.optimizer.zero_grad()
                    loss.backward()
                    s.optimizer.step()
            except StopIteration:
                break
            dt = time.perf_counter() - t0
            self.global_step += 1
            self.step_in_epoch += 1
            # with the pipeline, `last` is the batch fetched ahead; its size and ids match the
            # trained one's in expectation, good enough for throughput and lookup counters
            assert batch is not None
            samples += batch.size
            self._pending.append(
                (self.global_step, self.epoch, {k: v.detach() for k, v in terms.items()})
            )
            self.metrics.step(
                samples=batch.size,
                step_seconds=dt,
                data_wait_seconds=it.wait - w0,
                losses={k: float(v) for k, v in terms.items()},
                lookups=count_lookups(batch, s.features),
            )
            bar.update(1)
            if self.global_step % cfg.train.log_every == 0:
                mean = self._flush_losses()
                if mean is not None:
                    bar.set_postfix(loss=f"{mean:.4f}")
            if cfg.run.checkpoint_every and self.global_step % cfg.run.checkpoint_every == 0:
                self._flush_losses()
                self._save()
            if cfg.train.max_steps and self.global_step >= cfg.train.max_steps:
                reached = True
                break
        if reached and self.step_in_epoch >= steps:
            self.step_in_epoch = steps  # the epoch is complete as well
        bar.close()
        if pipe is not None:
            pipe.detach()  # restore the sharded modules' own forwards (evaluation calls them)
        self._flush_losses()
        el = time.perf_counter() - t_epoch
        if s.env.is_main:
            s.log.info(
                "epoch %d: %d steps, loss %.4f, %.0f samples/s/rank, data wait %.1f%%",
                self.epoch,
                self.step_in_epoch,
                self._epoch_loss[0] / max(self._epoch_loss[1], 1),
                samples / max(el, 1e-9),
                100 * it.wait / max(el, 1e-9),
            )
        return reached

    def _validate(self, epoch: int) -> bool:
        """Validation + best checkpoint + early stopping; returns True to stop."""
        cfg, s = self.cfg, self.s
        res = run_eval(s, "valid", metrics=self.metrics)
        sel = cfg.train.select_metric
        if sel not in res:
            raise SystemExit(f"train.select_metric: {sel!r} not among {sorted(res)}")
        value = res[sel]
        improved = self.best is None or value > self.best
        if improved:
            self.best, self.best_step, self.bad_evals = value, self.global_step, 0
        else:
            self.bad_evals += 1
        self.history.append({"epoch": epoch, "step": self.global_step, "valid": res})
        if s.env.is_main:
            s.log.info(
                "valid epoch %d: %s%s",
                epoch,
                " ".join(f"{k}={v:.4f}" for k, v in res.items()),
                " *" if improved else "",
            )
        self._save(best=improved)
        self._write_metrics()
        if self.bad_evals >= cfg.train.patience:
            s.log.info("early stopping: %d evaluations without improvement", self.bad_evals)
            return True
        return False

    def _final_test(self) -> dict[str, Any]:
        s = self.s
        best = read_pointer(s.run_dir, "best")
        if best is not None and s.optimizer is not None:
            load_checkpoint(best, s.wrapped, None)
        res = run_eval(s, "test", metrics=self.metrics)
        out = self._write_metrics(test=res)
        if s.env.is_main:
            s.log.info(
                "test (best step %s): %s",
                self.best_step,
                " ".join(f"{k}={v:.4f}" for k, v in res.items()),
            )
        self.metrics.close()
        return out

    def _write_metrics(self, test: dict[str, float] | None = None) -> dict[str, Any]:
        out = {
            "model": self.cfg.model_name,
            "world_size": dist.get_world_size(),
            "global_step": self.global_step,
            "epochs_done": self.epoch,
            "best_step": self.best_step,
            "best_valid": self.best,
            "select_metric": self.cfg.train.select_metric,
            "valid": self.history,
        }
        if test is not None:
            out["test"] = test
        if self.s.env.is_main:
            tmp = self.s.run_dir / ".metrics.json.tmp"
            tmp.write_text(json.dumps(out, indent=2))
            tmp.replace(self.s.run_dir / "metrics.json")
        return out
