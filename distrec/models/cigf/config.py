"""The ``model:`` section of a CIGF config (paper: Guo et al., WWW 2023).

Graph depth, mode and fanout come from the shared ``graph:`` section (``graph.layers``,
``graph.mode``, ``graph.fanout``). The switches below reproduce the paper's ablations:

=====================  =================================================================
paper variant          switches
=====================  =================================================================
CIGF                   defaults (``cigcn: true``, ``head: mesi``, ``attention: node_beh_layer``)
Base Model (Table 3)   ``cigcn: false``, ``head: bilinear``
w/o CIGCN (Table 3)    ``cigcn: false``
w/o MESI (Table 3/5)   ``head: bilinear`` (same input: the mean of the K representations)
global-wise (Table 4)  ``attention: global`` (also ``node``, ``node_layer``, ``node_beh``)
CIGCN-MMOE (Table 5)   ``head: mmoe`` (shared input, K bilinear experts, a gate per task)
=====================  =================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

ATTENTION_MODES = ("node_beh_layer", "node_beh", "node_layer", "node", "global")
HEADS = ("mesi", "bilinear", "mmoe")
AGGREGATORS = ("lightgcn",)
TOWERS = ("mean", "sum")
GATE_INPUTS = ("raw", "unit")
NORMS = ("symm", "left")


@dataclass
class CigfConfig:
    embedding_dim: int = 16  # paper A.1: 16 for users and items
    behaviors: list[str] = field(default_factory=list)  # empty = manifest order (target last)
    cigcn: bool = True  # False: behavior-specific graphs used directly (A^k)^l ("w/o CIGCN")
    attention: str = "node_beh_layer"  # paper eq. 9 and Table 4
    heads: int = 1  # H attention heads (A.1 uses 1)
    # Initial bias b of eq. 9. 0 (the authors' code) makes every alpha start near 0 with small
    # embeddings, i.e. every hop after the first starts switched off; 1 starts as the plain sum.
    attention_bias: float = 0.0
    leaky_slope: float = 0.2  # LeakyReLU of the attention (eq. 9); TF's default slope
    aggregator: str = "lightgcn"  # the paper's best (Fig. 6); the only one implemented
    head: str = "mesi"  # mesi | bilinear | mmoe
    gate_per_task: bool = False  # eq. 15 writes one W_g; True gives every task its own gate net
    # MESI gate input: "raw" = [x_k || y_k] (eq. 15); "unit" = each side scaled to unit length
    # (not the paper): the representation norm no longer reaches the gate logits. Tried as a cure
    # for saturated gates; they stay nearly hard anyway, through W_g (docs/results/cigf.md)
    gate_input: str = "raw"
    # L2 on MESI's gate weights W_g alone, added to the loss (not the paper, whose code decays every
    # parameter at 1e-2 instead); 0 = off
    gate_l2: float = 0.0
    tower: str = "mean"  # h^k in eq. 16: mean over D (paper) or sum
    loss_weights: list[float] = field(default_factory=list)  # per behavior; empty = all 1
    init_scale: float = 1.0  # multiplies the Xavier-uniform bound of the embedding tables
    all_behavior_epoch: bool = False  # epoch over all behaviors' pairs instead of target pairs
    sampled_eval_negatives: int = 99  # protocol 2 (MB-GMN/CIGF): 1 test item + 99 unbought
    # The authors' code multiplies every score by ``mult`` (300) before the BPR loss: a
    # temperature that decides how fast the loss saturates. Ranking is unaffected.
    score_scale: float = 1.0
    # Adjacency normalisation in full mode: "symm" = the bundle's 1/sqrt(deg_u deg_i);
    # "left" = D^-1 A (row mean), the default of the authors' code (``--normalization left``).
    norm: str = "symm"

    def validate(self) -> None:
        checks = (
            ("attention", self.attention, ATTENTION_MODES),
            ("head", self.head, HEADS),
            ("aggregator", self.aggregator, AGGREGATORS),
            ("tower", self.tower, TOWERS),
            ("gate_input", self.gate_input, GATE_INPUTS),
            ("norm", self.norm, NORMS),
        )
        for name, value, choices in checks:
            if value not in choices:
                raise ValueError(f"model.{name}: {value!r} is not one of {', '.join(choices)}")
        if self.gate_l2 < 0:
            raise ValueError(f"model.gate_l2: must be >= 0, got {self.gate_l2}")
        if self.heads < 1:
            raise ValueError(f"model.heads: must be >= 1, got {self.heads}")
        if self.score_scale <= 0:
            raise ValueError(f"model.score_scale: must be > 0, got {self.score_scale}")
        if self.embedding_dim < 1:
            raise ValueError(f"model.embedding_dim: must be >= 1, got {self.embedding_dim}")
