"""Sequence data adapter shared by the sequential models (DisMIR, MDGR).

Training samples come from the bundle's ``sequences`` table: every position ``t >= 1`` of a
user's chronological sequence is one sample, whose history is the window of the last ``kappa``
items before ``t`` and whose target is ``items[t]``. Evaluation reads
``eval/<protocol>/split=valid|test`` rows (the ComiRec/REMI ``user_holdout`` protocol: the
``input`` prefix infers the interests, ``targets`` are ranked against the full item table).

Batches carry one KeyedJaggedTensor for the model's item EmbeddingCollection under
``Batch.sparse["ec"]`` with keys (every key always present, empty ones with zero lengths, because
a sharded EmbeddingCollection wants the same keys each call):

* ``hist``: the history window, up to kappa ids per sample, oldest first;
* ``pos``: the target item (1 id per sample);
* ``neg``: ``num_candidates`` uniform negative candidates per sample;
* ``cooc`` / ``part_neg`` (only with ``cooc_negatives > 0``): one positive drawn from the
  anchor's (the target's) row of the item co-occurrence graph (0 ids when the row is empty), and
  ``cooc_negatives`` uniform negatives shared by the batch, all in the first bag.

``Batch.dense``: ``cooc_mask`` [B] float (1 when ``cooc`` has an id), and ``noise`` [B, kappa, F]
standard normal (when ``noise_dim`` F > 0) for models that break symmetry with random
initial routing logits.

Samples are read rank-partitioned and streamed (:mod:`distrec.data.seq_stream`, the only
reader): rank r loads only its shards' row groups, a shuffle window at a time. Every random
quantity is drawn for the whole *global* batch from a generator seeded with (seed, epoch, step)
and indexed at the rank's global positions, so a run at 2 ranks sees exactly the samples,
negatives and noise of a run at 1 rank. Evaluation rows are rank shares of the eval table
(:class:`distrec.data.seq_stream.EvalShare`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from distrec.data.bundle import Bundle
from distrec.data.csr import Csr
from distrec.data.loader import step_rng
from distrec.data.payloads import PayloadTraining
from distrec.data.schema import GRAPH_ITEM_COOC, BundleFormatError
from distrec.data.seq_stream import EvalShare, SeqPlan, SeqSlice, SeqStream, check_row_ids, windows
from distrec.data.stream import DEFAULT_BUFFER_ROWS, check_layout
from distrec.models.api import Batch, EvalQuery, TaskData

log = logging.getLogger(__name__)

FEATURES = ("hist", "pos", "neg")
PARTITION_FEATURES = ("cooc", "part_neg")
_EVAL_SALT = {"valid": 1, "test": 2}


def _cooc_features(
    cooc: np.ndarray, part_neg: np.ndarray, b: int, feats: dict[str, Any], dense: dict[str, Any]
) -> None:
    """The partition loss's inputs of a batch of ``b`` samples: ``cooc`` [b] (a co-occurring item
    per sample, -1 for none) as a 0/1-length jagged feature with its mask, and the batch's shared
    ``part_neg`` negatives as one jagged row held by the first sample."""
    has = cooc >= 0
    feats["cooc"] = (cooc[has], has.astype(np.int64))
    first = np.zeros(b, np.int64)
    if b:
        first[0] = len(part_neg)
    feats["part_neg"] = (part_neg if b else part_neg[:0], first)
    dense["cooc_mask"] = has.astype(np.float32)


@dataclass
class SequenceDataOptions:
    max_len: int = 20  # kappa: history window
    num_candidates: int = 10  # uniform negatives per sample (hard-negative candidates)
    negative_pool: int = 0  # > 0: candidates drawn from one shared uniform pool of this size
    cooc_negatives: int = 0  # N_o; > 0 adds the co-occurrence features
    noise_dim: int = 0  # F; > 0 adds dense["noise"] [B, kappa, F]
    batch_size: int = 1024  # global
    eval_batch_size: int = 1024  # global
    seed: int = 0
    protocol: str = "user_holdout"
    exclude_history: bool = False  # ComiRec protocol ranks every item, history included
    eval_max_users: int = 0  # > 0: a seeded sample of at most this many eval rows (eval.max_users)
    prefetch: int = 0  # payloads built ahead (data.prefetch; distrec.data.payloads)
    workers: int = 0  # > 0: built in a worker process (data.num_workers)
    partitions: int = 0  # data.partitions (0: the manifest's)
    shuffle_buffer: int = DEFAULT_BUFFER_ROWS  # samples per shuffle window and shard
    epochs: int = 0  # train.epochs (> 0: no next-epoch windows loaded after the last epoch)


def sample_cooc(
    graph: Csr,
    anchors: np.ndarray,
    rng: np.random.Generator | None,
    cum: np.ndarray | None = None,
    uniforms: np.ndarray | None = None,
) -> np.ndarray:
    """One neighbour per anchor drawn with probability proportional to the edge weight
    (the multinomial M(Y_i | S_i) of Theorem 4); -1 where the anchor has no neighbour.
    ``cum``: ``np.cumsum(graph.weights, dtype=float64)``, computed once by the caller (it is
    O(edges), i.e. it grows with the catalogue, and was the largest data cost per step).
    ``uniforms`` [len(anchors)]: the U(0, 1) draws to use instead of ``rng`` (streamed batches
    draw them for the global batch and keep their own positions)."""
    lo, hi = graph.indptr[anchors], graph.indptr[anchors + 1]
    out = np.full(len(anchors), -1, dtype=np.int64)
    has = hi > lo
    if not has.any():
        return out
    if cum is None:
        cum = np.cumsum(graph.weights, dtype=np.float64)
    base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
    total = cum[np.maximum(hi - 1, 0)] - base
    u = uniforms if uniforms is not None else rng.random(len(anchors))  # type: ignore[union-attr]
    target = base + u * total
    pick = np.searchsorted(cum, target, side="right")
    pick = np.clip(pick, lo, np.maximum(hi - 1, lo))
    out[has] = graph.indices[pick[has]]
    return out


def make_kjt(
    features: dict[str, tuple[np.ndarray, np.ndarray]], keys: tuple[str, ...], batch: int
) -> KeyedJaggedTensor:
    """KJT with ``keys`` in order; a key missing from ``features`` gets ``batch`` zero lengths."""
    vals, lens = [], []
    for k in keys:
        v, n = features.get(k, (np.zeros(0, np.int64), np.zeros(batch, np.int64)))
        assert len(n) == batch, f"feature {k}: {len(n)} lengths for batch {batch}"
        vals.append(v)
        lens.append(n)
    return KeyedJaggedTensor.from_lengths_sync(
        keys=list(keys),
        values=torch.from_numpy(np.concatenate(vals).astype(np.int64)),
        lengths=torch.from_numpy(np.concatenate(lens).astype(np.int32)),
    )


class SequenceData(PayloadTraining, TaskData):
    """Sequence samples and ``user_holdout`` evaluation of one rank. See the module docstring."""

    def __init__(
        self, bundle_dir: str, opts: SequenceDataOptions, rank: int = 0, world_size: int = 1
    ) -> None:
        self.bundle_dir = bundle_dir
        self.opts = opts
        self.rank, self.world_size = rank, world_size
        self.bundle = Bundle(bundle_dir)
        self.manifest = self.bundle.manifest
        self.num_items = self.manifest.num_items
        self.keys = FEATURES + (PARTITION_FEATURES if opts.cooc_negatives > 0 else ())
        self.cooc: Csr | None = None
        self.cooc_cum = np.zeros(0)
        if opts.cooc_negatives > 0:  # item x item: a catalogue table, not training rows
            self.cooc = self.bundle.graph(GRAPH_ITEM_COOC)
            self.cooc_cum = np.cumsum(self.cooc.weights, dtype=np.float64)
        self._shares: dict[str, EvalShare] = {}
        table, split, kind, columns = self.train_source()
        self.plan = SeqPlan(
            self.bundle, table, kind=kind, columns=columns, split=split,
            partitions=opts.partitions, global_batch=opts.batch_size,
            buffer_rows=opts.shuffle_buffer,
        )  # fmt: skip
        self.stream = SeqStream(
            self.plan, rank, world_size, opts.batch_size, opts.seed, opts.max_len
        )
        self.global_batch = opts.batch_size
        self.init_prefetch(opts.prefetch, opts.workers)
        log.info(
            "sequence data (%s): %d shards, %d training samples (footers), %d items",
            table, self.plan.partitions, self.plan.total_rows(), self.num_items,
        )  # fmt: skip

    # ---------------------------------------------------------------- training
    def train_source(self) -> tuple[str, str | None, str, list[str]]:
        """(table, split, kind, list columns) the stream reads (distrec.data.seq_stream)."""
        return "sequences", None, "windows", ["items"]

    @property
    def num_samples(self) -> int:
        """Training samples of the whole table (all ranks), from footers."""
        return self.plan.total_rows()

    def num_train_steps(self, epoch: int) -> int:
        return self.stream.num_steps()

    def payload(self, epoch: int, step: int) -> dict[str, Any]:
        """This rank's numpy payload of global step ``step`` (see :meth:`stream_payload`)."""
        return self.stream_payload(epoch, step)[0]

    def stream_payload(self, epoch: int, step: int) -> tuple[dict[str, Any], list[SeqSlice]]:
        """numpy ``{"feats": {key: (values, lengths)}, "dense": {name: array}, "size": b}`` of
        this rank's part of global step ``step`` (own shards' samples, in shard order) and the
        slices it came from. Random draws are made for the whole global batch from the
        (seed, epoch, step) generator and indexed at this rank's global positions, so they do
        not depend on W."""
        o, st = self.opts, self.stream
        parts = st.step_slices(epoch, step)
        gp = st.global_positions
        gb = st.global_batch
        rng = step_rng(o.seed, epoch, step, 0x5E9)
        b = len(gp)
        hist = np.concatenate([p.hist for p in parts]) if parts else np.zeros(0, np.int64)
        hist_len = np.concatenate([p.hist_len for p in parts]) if parts else np.zeros(0, np.int64)
        pos = np.concatenate([p.pos for p in parts]) if parts else np.zeros(0, np.int64)
        if all(p.neg is not None for p in parts) and parts:  # chunks: the row's own negative
            neg = np.concatenate([p.neg for p in parts if p.neg is not None])
            neg_len = np.ones(b, np.int64)
        else:
            if o.negative_pool > 0:
                # shared negatives: every sample's candidates come from one uniform pool per
                # step, so each candidate is still uniform over the items but a step touches at
                # most negative_pool rows of the table instead of gb * num_candidates
                pool = rng.integers(0, self.num_items, size=o.negative_pool)
                g_neg = pool[rng.integers(0, o.negative_pool, size=(gb, o.num_candidates))]
            else:
                g_neg = rng.integers(0, self.num_items, size=(gb, o.num_candidates))
            neg = g_neg[gp].reshape(-1)
            neg_len = np.full(b, o.num_candidates, np.int64)
        feats = {
            "hist": (hist, hist_len),
            "pos": (pos, np.ones(b, np.int64)),
            "neg": (neg, neg_len),
        }
        dense: dict[str, np.ndarray] = {}
        if o.noise_dim:
            noise = rng.standard_normal((gb, o.max_len, o.noise_dim), dtype=np.float32)
            dense["noise"] = np.ascontiguousarray(noise[gp])
        if self.cooc is not None:
            u = rng.random(gb)[gp]
            cooc = sample_cooc(self.cooc, pos, None, self.cooc_cum, uniforms=u)
            part_neg = rng.integers(0, self.num_items, size=o.cooc_negatives)
            _cooc_features(cooc, part_neg, b, feats, dense)
        return {"feats": feats, "dense": dense, "size": b}, parts

    # ------------------------------------------------- streamed data position (checkpoints)
    def warm(self, epoch: int, step: int) -> None:
        self.stream.step_slices(epoch, step)  # the shards' windows of that step, cached

    def after_epoch(self, epoch: int) -> None:
        # the next epoch's first windows while the trainer validates; none after the last epoch
        # (they would be a shard's worth of reads and memory held through the final test)
        if not 0 < self.opts.epochs <= epoch + 1:
            self.stream.step_slices(epoch + 1, 0)

    def _layout(self) -> dict[str, Any]:
        return {
            "partitions": self.plan.partitions,
            "global_batch": self.opts.batch_size,
            "buffer_rows": self.plan.buffer_rows,
            "seed": self.opts.seed,
        }

    def data_state(self, epoch: int, step: int) -> dict[str, Any]:
        """The data position before global step ``step`` of ``epoch`` (checkpoint meta): the
        stream layout plus this rank's shard cursors."""
        return {"epoch": epoch, "step": step, **self._layout(),
                "shards": self.stream.position(epoch, step)}  # fmt: skip

    def check_state(self, state: dict[str, Any]) -> None:
        """Refuse to resume from a data position laid out differently (the stream would differ)."""
        check_layout(state, self._layout())

    def stats(self) -> dict[str, Any]:
        """Counters for tests and benches: rows read per table, window loads, built batches."""
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "rows_read": dict(self.bundle.rows_read),
            "built": {str(e): c for e, c in self.built.items()},
            "steps": self.num_train_steps(0),
            "shards": self.stream.shards,
            "window_reads": [list(r) for r in self.stream.reads],
        }

    def to_batch(self, payload: dict[str, Any]) -> Batch:
        feats, dense, b = payload["feats"], payload["dense"], payload["size"]
        return Batch(
            sparse={"ec": make_kjt(feats, self.keys, b)},
            dense={k: torch.from_numpy(v) for k, v in dense.items()},
            size=b,
        )

    # -------------------------------------------------------------- evaluation
    def num_eval_steps(self, split: str) -> int:
        return self.eval_share(split).num_steps()

    eval_columns: tuple[str, ...] = ("input", "targets")

    def eval_share(self, split: str) -> EvalShare:
        """This rank's share of ``split``'s eval rows (read once, cached)."""
        if split not in self._shares:
            o = self.opts
            share = EvalShare(
                self.bundle, f"eval/{o.protocol}", split, list(self.eval_columns), self.rank,
                self.world_size, o.eval_batch_size, o.eval_max_users, o.seed, o.partitions,
            )  # fmt: skip
            for c in ("input", "targets", "candidates"):
                if c in share.cols:
                    off, val = share.cols[c]
                    check_row_ids(val, self.num_items, share.where, c, off, share.row0s)
            self._shares[split] = share
        return self._shares[split]

    def eval_step(
        self, split: str, step: int
    ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray, np.ndarray | None]:
        """(columns of this rank's eval rows, users, local rows of step ``step``, noise [b, L, F]
        or None). Noise is drawn per block of 1,024 global eval rows, so a query's noise does
        not depend on W."""
        o = self.opts
        salt = _EVAL_SALT.get(split, 3)
        share = self.eval_share(split)
        rows = share.step_rows(step)
        noise = None
        if o.noise_dim:
            gpos = share.row0s[rows]
            noise = np.zeros((len(rows), o.max_len, o.noise_dim), np.float32)
            for blk in np.unique(gpos // 1024):
                m = gpos // 1024 == blk
                z = step_rng(o.seed, salt, int(blk), 0xE7A2).standard_normal(
                    (1024, o.max_len, o.noise_dim), dtype=np.float32
                )
                noise[m] = z[gpos[m] % 1024]
        return share.cols, share.users, rows, noise

    def eval_queries(self, split: str, task: str = "user") -> Iterator[EvalQuery]:
        """This rank's queries of each global evaluation step (its shards' rows); every rank
        yields the same count. ``exclude`` is empty by default: the ComiRec protocol ranks every item."""
        if task != "user":
            raise ValueError(f"sequence data has only the 'user' task, not {task!r}")
        o = self.opts
        for step in range(self.num_eval_steps(split)):
            cols, users, rows, noise_r = self.eval_step(split, step)
            (in_off, in_val), (t_off, t_val) = cols["input"], cols["targets"]
            hist, hist_len = windows(in_val, in_off[rows], in_off[rows + 1], o.max_len)
            if len(rows) == 0:
                # A rank without queries this step still runs the lookups (collectives): one
                # padding query with an empty history; ids/targets stay empty so it is ignored.
                hist_len = np.zeros(1, np.int64)
                noise_r = (
                    None if noise_r is None else np.zeros((1, o.max_len, o.noise_dim), np.float32)
                )
            feats = {"hist": (hist, hist_len)}
            dense = {} if noise_r is None else {"noise": torch.from_numpy(noise_r)}
            batch = Batch(
                sparse={"ec": make_kjt(feats, self.keys, len(hist_len))},
                dense=dense,
                size=len(rows),
            )
            targets = [np.unique(t_val[t_off[r] : t_off[r + 1]]).tolist() for r in rows]
            if o.exclude_history:
                exclude = [np.unique(in_val[in_off[r] : in_off[r + 1]]).tolist() for r in rows]
            else:
                exclude = [[] for _ in rows]
            yield EvalQuery(
                batch=batch, ids=torch.from_numpy(users[rows]), targets=targets, exclude=exclude
            )

    def item_batch(self, items: torch.Tensor) -> Batch:
        ids = items.detach().cpu().numpy().astype(np.int64)
        feats = {"pos": (ids, np.ones(len(ids), np.int64))}
        return Batch(sparse={"ec": make_kjt(feats, self.keys, len(ids))}, size=len(ids))


def build_sequence_data(
    cfg: Any, bundle_dir: str, rank: int, world_size: int, **extra: Any
) -> SequenceData:
    """Build from a distrec Config: ``cfg.data`` batch sizes, ``cfg.run.seed``, and the model
    section's ``max_len`` plus ``extra`` overrides (e.g. ``cooc_negatives``, ``noise_dim``)."""
    protocol = "user_holdout"
    manifest = Bundle(bundle_dir).manifest  # a local path or a URI (s3://, gs://, ...)
    if manifest.split.get("protocol") not in (None, protocol):
        raise BundleFormatError(
            f"{bundle_dir}/_manifest.json: split.protocol is {manifest.split.get('protocol')!r}; "
            f"sequence models need a {protocol!r} bundle"
        )
    opts = SequenceDataOptions(
        max_len=int(getattr(cfg.model, "max_len", 20)),
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        seed=cfg.run.seed,
        protocol=protocol,
        eval_max_users=cfg.eval.max_users,
        prefetch=cfg.data.prefetch,
        workers=cfg.data.num_workers,
        partitions=cfg.data.partitions,
        shuffle_buffer=cfg.data.shuffle_buffer,
        epochs=cfg.train.epochs,
        **extra,
    )
    return SequenceData(bundle_dir, opts, rank, world_size)
