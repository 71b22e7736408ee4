"""MDGR's data: the shared sequence adapter plus timestamps and the ``chunks`` protocol.

Adds ``dense["hist_days"]`` [B, L]: days between each history item and the history's newest
item (the recency that the time encoding tau reads), and evaluates ``chunks`` bundles (MDGR's
MovieLens protocol) as a sampled protocol: every query ranks its 50 held-out positives among
those positives plus its 50 sampled unseen negatives (AUC, Recall@50), while ``user_holdout``
bundles (Amazon Beauty, shared with DisMIR) rank the full item table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from distrec.data.bundle import Bundle
from distrec.data.schema import BundleFormatError
from distrec.data.seq_stream import windows
from distrec.models.api import EvalQuery
from distrec.models.common.sequence_data import SequenceData, SequenceDataOptions

SECONDS_PER_DAY = 86400.0
PROTOCOLS = ("user_holdout", "chunks")


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
    target and its negative the chunk's j-th sampled unseen item (``eval/chunks/split=train``,
    streamed like the sequences: :mod:`distrec.data.seq_stream` ``kind="chunks"``).
    """

    eval_columns = ("input", "targets", "input_ts", "candidates")

    def train_source(self) -> tuple[str, str | None, str, list[str]]:
        if self.opts.protocol == "chunks":
            return "eval/chunks", "train", "chunks", ["input", "input_ts", "targets", "candidates"]
        return "sequences", None, "windows", ["items", "ts"]

    def payload(self, epoch: int, step: int) -> dict[str, Any]:
        p, parts = self.stream_payload(epoch, step)
        ts = [pt.hist_ts for pt in parts if pt.hist_ts is not None]
        lengths = p["feats"]["hist"][1]
        flat = np.concatenate(ts) if ts else np.zeros(0, np.int64)
        p["dense"]["hist_days"] = recency_days(flat, lengths, self.opts.max_len)
        return p

    def eval_queries(self, split: str, task: str = "user") -> Iterator[EvalQuery]:
        for step, q in enumerate(super().eval_queries(split, task)):
            cols, _, rows, _ = self.eval_step(split, step)
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
    manifest = Bundle(bundle_dir).manifest  # a local path or a URI (s3://, gs://, ...)
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
        partitions=cfg.data.partitions,
        shuffle_buffer=cfg.data.shuffle_buffer,
        epochs=cfg.train.epochs,
    )
    return MDGRData(bundle_dir, opts, rank, world_size)
