"""MDGR's data: the shared sequence adapter plus timestamps and the ``chunks`` protocol.

Adds ``dense["hist_days"]`` [B, L]: days between each history item and the history's newest
item (the recency that the time encoding tau reads), and evaluates ``chunks`` bundles (MDGR's
MovieLens protocol) as a sampled protocol: every query ranks its 50 held-out positives among
those positives plus its 50 sampled unseen negatives (AUC, Recall@50), while ``user_holdout``
bundles (Amazon Beauty, shared with DisMIR) rank the full item table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from distrec.data.bundle import list_column
from distrec.data.schema import BundleFormatError, Manifest
from distrec.models.api import EvalQuery
from distrec.models.common.sequence_data import (
    SequenceData,
    SequenceDataOptions,
    windows,
)

SECONDS_PER_DAY = 86400.0
PROTOCOLS = ("user_holdout", "chunks")
log = logging.getLogger(__name__)


def recency_days(ts: np.ndarray, lengths: np.ndarray, max_len: int) -> np.ndarray:
    """Flat window timestamps (concatenated rows of ``lengths``) -> [B, max_len] float32 days
    before each row's newest item, zero padded on the right."""
    b = len(lengths)
    out = np.zeros((b, max_len), dtype=np.float32)
    if b == 0 or ts.size == 0:
        return out
    ends = np.cumsum(lengths)
    newest = ts[np.maximum(ends - 1, 0)]
    row = np.repeat(np.arange(b), lengths)
    col = np.arange(ts.size) - np.repeat(ends - lengths, lengths)
    out[row, col] = (np.repeat(newest, lengths) - ts) / SECONDS_PER_DAY
    return out


class MDGRData(SequenceData):
    """SequenceData with history timestamps and the chunks protocol.

    With a ``chunks`` bundle, training follows the paper too: a sample is (training chunk c,
    position j) for j < 50, its history the chunk's 50 inputs, its positive the chunk's j-th
    target and its negative the chunk's j-th sampled unseen item (``eval/chunks/split=train``).
    """

    def __init__(
        self, bundle_dir: str, opts: SequenceDataOptions, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__(bundle_dir, opts, rank, world_size)
        self.chunks: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        if self.stream is not None:  # timestamps and chunks come with the streamed windows
            return
        where = self.bundle.table_dir("sequences")
        table = self.bundle.table("sequences", ["user", "items", "ts"])
        off, self.seq_ts = list_column(table, "ts", where)
        if not np.array_equal(off, self.seq_offsets):
            row = int(np.flatnonzero(np.diff(off) != np.diff(self.seq_offsets))[0])
            raise BundleFormatError(
                f"{where}: row {row}, field 'ts': ts list does not align with the items list"
            )
        if opts.protocol == "chunks":
            self._load_train_chunks()

    def _load_train_chunks(self) -> None:
        where = self.bundle.table_dir("eval/chunks") / "split=train"
        columns = ("input", "input_ts", "targets", "candidates")
        table = self.bundle.table("eval/chunks", list(columns), split="train")
        self.chunks = {c: list_column(table, c, where) for c in columns}
        t_off, c_off = self.chunks["targets"][0], self.chunks["candidates"][0]
        # one sample per (chunk, j) with j below both the target and the negative count
        per = np.minimum(np.diff(t_off), np.diff(c_off))
        self.chunk_of = np.repeat(np.arange(len(per)), per)
        self.chunk_pos = np.arange(len(self.chunk_of)) - np.repeat(np.cumsum(per) - per, per)
        # (the "training samples" of SequenceData's log line are sliding windows; these are used)
        log.info(
            "chunks protocol: %d training chunks, %d training samples", len(per), self.num_samples
        )

    eval_columns = ("input", "targets", "input_ts", "candidates")

    def train_source(self) -> tuple[str, str | None, str, list[str]]:
        if self.opts.protocol == "chunks":
            return "eval/chunks", "train", "chunks", ["input", "input_ts", "targets", "candidates"]
        return "sequences", None, "windows", ["items", "ts"]

    @property
    def num_samples(self) -> int:
        if self.stream is not None:
            return self.plan.total_rows()
        return len(self.chunk_of) if self.chunks is not None else len(self.target_pos)

    def payload(self, epoch: int, step: int) -> dict[str, Any]:
        if self.stream is None:
            return super().payload(epoch, step)
        p, parts = self.stream_payload(epoch, step)
        ts = [pt.hist_ts for pt in parts if pt.hist_ts is not None]
        lengths = p["feats"]["hist"][1]
        flat = np.concatenate(ts) if ts else np.zeros(0, np.int64)
        p["dense"]["hist_days"] = recency_days(flat, lengths, self.opts.max_len)
        return p

    def train_payload(self, global_rows: np.ndarray, epoch: int, step: int) -> dict[str, Any]:
        if self.chunks is not None:
            return self._chunk_payload(global_rows)
        p = super().train_payload(global_rows, epoch, step)
        rows = global_rows[self.local_slice(global_rows)]
        ts, lengths = windows(
            self.seq_ts, self.sample_start[rows], self.target_pos[rows], self.opts.max_len
        )
        p["dense"]["hist_days"] = recency_days(ts, lengths, self.opts.max_len)
        return p

    def _chunk_payload(self, global_rows: np.ndarray) -> dict[str, Any]:
        assert self.chunks is not None
        rows = global_rows[self.local_slice(global_rows)]
        c, j = self.chunk_of[rows], self.chunk_pos[rows]
        (i_off, i_val), (_, i_ts) = self.chunks["input"], self.chunks["input_ts"]
        (t_off, t_val), (c_off, c_val) = self.chunks["targets"], self.chunks["candidates"]
        hist, lengths = windows(i_val, i_off[c], i_off[c + 1], self.opts.max_len)
        ts, _ = windows(i_ts, i_off[c], i_off[c + 1], self.opts.max_len)
        b = len(rows)
        feats = {
            "hist": (hist, lengths),
            "pos": (t_val[t_off[c] + j], np.ones(b, np.int64)),
            "neg": (c_val[c_off[c] + j], np.ones(b, np.int64)),
        }
        dense = {"hist_days": recency_days(ts, lengths, self.opts.max_len)}
        return {"feats": feats, "dense": dense, "size": b}

    def eval_queries(self, split: str, task: str = "user") -> Iterator[EvalQuery]:
        if self.stream is None:
            name = f"eval/{self.opts.protocol}"
            table = self.bundle.table(name, ["input", "input_ts", "candidates"], split=split)
            where = self.bundle.table_dir(name) / f"split={split}"
            cols = {c: list_column(table, c, where) for c in ("input_ts", "candidates")}
        for step, q in enumerate(super().eval_queries(split, task)):
            if self.stream is not None:
                cols, _, rows, _ = self.eval_step(split, step)
            else:
                global_rows = self.eval_step_rows(split, step)
                rows = global_rows[self.local_slice(global_rows)]
            (in_off, in_ts), (c_off, c_val) = cols["input_ts"], cols["candidates"]
            ts, lengths = windows(in_ts, in_off[rows], in_off[rows + 1], self.opts.max_len)
            if len(rows) == 0:  # the padding query of a rank without queries (SequenceData)
                lengths = np.zeros(1, np.int64)
            q.batch.dense["hist_days"] = torch.from_numpy(
                recency_days(ts, lengths, self.opts.max_len)
            )
            if self.opts.protocol == "chunks":
                # candidates = the query's positives followed by its sampled negatives
                q.candidates = [
                    t + c_val[c_off[r] : c_off[r + 1]].tolist()
                    for t, r in zip(q.targets, rows, strict=True)
                ]
            yield q


def build_mdgr_data(cfg: Any, bundle_dir: str, rank: int, world_size: int) -> MDGRData:
    manifest = Manifest.load(bundle_dir)
    protocol = manifest.split.get("protocol", "user_holdout")
    if protocol not in PROTOCOLS:
        raise BundleFormatError(
            f"{bundle_dir}/_manifest.json: split.protocol {protocol!r}; MDGR reads {', '.join(PROTOCOLS)} bundles"
        )
    opts = SequenceDataOptions(
        max_len=cfg.model.max_len,
        # chunks: one negative per sample, the chunk's own sampled unseen item
        num_candidates=1 if protocol == "chunks" else cfg.model.num_negatives,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        seed=cfg.run.seed,
        protocol=protocol,
        eval_max_users=cfg.eval.max_users,
        prefetch=cfg.data.prefetch,
        workers=cfg.data.num_workers,
        stream=True,
        partitions=cfg.data.partitions,
        shuffle_buffer=cfg.data.shuffle_buffer,
    )
    return MDGRData(bundle_dir, opts, rank, world_size)
