"""MDGR hyper-parameters (the ``model:`` section of configs/mdgr/*.yaml). Defaults: paper 4.1.3."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MDGRConfig:
    dim: int = 32  # item embedding size d (paper: 32)
    time_dim: int = 16  # sinusoidal time encoding tau (days)
    pos_dim: int = 16  # sinusoidal position encoding rho
    max_len: int = 50  # l: most recent items fed to the model (chunks protocol: 50 inputs)
    attn_heads: int = 2  # multi-head self-attention of the item encoder (eq. 4-6)
    dropout: float = 0.1
    interests: int = 8  # k clusters (paper: 8)
    iterations: int = 5  # m dynamic graph clustering cycles (paper: 5 ML, 9 Amazon)
    sim_heads: int = 4  # delta weighted-cosine heads (eq. 8)
    gamma: float = 0.3  # keep the top gamma * n^2 similarity entries (eq. 9)
    gat_heads: int = 2  # H cluster-aware attention heads (eq. 13)
    kmeans_steps: int = 5  # Lloyd steps of each batched k-means
    weight_hidden: int = 32  # hidden width of the interest-weight FFN (eq. 15)
    num_negatives: int = 50  # sampled unseen negatives per training sequence
    # ablations (paper Table 3): dgc=False -> MDGR-DGC (one static clustering, no graph);
    # weights=False -> MDGR-W; use_pos/use_time=False -> MDGR-P / MDGR-T (both: MDGR-PT)
    dgc: bool = True
    weights: bool = True
    use_pos: bool = True
    use_time: bool = True
    variant: str = "mdgr"  # mdgr | gru4rec (single-interest GRU baseline on the same data)
    # Not in the paper (eq. 6 has no residual): phi = FFN(...) + item embedding. A diagnostic:
    # trained encoders map a history's items to almost one vector with or without it
    # (docs/results/mdgr.md, "Why the variants tie").
    encoder_residual: bool = False
    # Not in the paper (eq. 16 has no bias): y = max_j w_j Linear(z_j . p) + b_p, b_p a learned
    # per-item bias (an extra 4-column block of the item table). A diagnostic: the bias learns
    # popularity, yet the encoder still maps a history to one vector (docs/results/mdgr.md).
    item_bias: bool = False
    # Not in the paper (eq. 11 runs the clustering attention once per (sequence, candidate)):
    # false clusters each sequence once with the target-free query (the mean of the encoded
    # history, what full ranking uses anyway) and scores every candidate against those
    # interests, so a step's cost does not grow with the candidates per sample.
    target_aware: bool = True
    # Not in the paper (-1: every one of the m cycles is target-aware, eq. 11): n in 1..m runs the
    # first m - n cycles with the target-free query (one clustering per sequence) and only the
    # last n per (sequence, candidate). Used with target_aware=true; a speed switch whose quality
    # is in docs/results/mdgr.md.
    aware_cycles: int = -1
    # Not in the paper (which clusters each cycle afresh): true starts every k-means after the
    # first from the previous cycle's labels, so the exact stop on unchanged labels fires sooner.
    # A speed switch whose quality is in docs/results/mdgr.md.
    kmeans_warm: bool = False
