"""The ``model:`` section of an IGRec config (paper symbols in comments)."""

from __future__ import annotations

from dataclasses import dataclass

INTEREST_MODULES = ("self_gating", "fc1", "fc2", "embedding", "none")
SELECTIONS = ("gumbel", "mean")
LAYER_COMBINES = ("mean", "sum")
GROUP_ITEM_REPS = ("raw", "propagated")


@dataclass
class IGRecConfig:
    dim: int = 64  # d, embedding size of users, items and groups
    interests: int = 3  # M, number of interests per user
    # how interests are made from e_u: self_gating (paper), fc1/fc2 (Table IV), embedding
    # (per-user interest table, Table IV) or none (ablation A: groups = mean of members' e_u)
    interest_module: str = "self_gating"
    selection: str = "gumbel"  # gumbel (paper) | mean (ablation B: i*_g = mean_n i_n)
    hard: bool = False  # hard (straight-through one-hot) Gumbel-softmax (ablation D)
    tau: float = 0.5  # Gumbel temperature
    eta1: float = 0.9  # weight of the user BPR loss; the group loss gets 1 - eta1
    eta2: float = 0.5  # weight of the interest regulariser Reg_asp
    threshold: float = 0.1  # t: only interest pairs with |cos| >= t are regularised
    regularizer: bool = True  # ablation C switches it off
    # The paper's Eq. 15 sums the signed cosine; the authors' code sums |cos|. |cos| pushes
    # interests towards orthogonality instead of towards opposite directions.
    reg_abs: bool = True
    member_cap: int = 0  # members read per group and step (uniform sample); 0 = all
    layer_combine: str = "mean"  # Eq. 11 sums layers; LightGCN and the authors' code average
    # Item side of the group task: the authors' code scores e*_g against the raw item table.
    group_item_rep: str = "raw"
    # Layer 0 of the propagation: True = e_u_hat (paper Eq. 10), False = e_u (authors' code,
    # which only puts e_u_hat into the layer combination).
    propagate_fused_users: bool = True
    init_std: float = 0.1

    def check(self) -> None:
        """Raise ValueError naming the field on a bad value."""
        for name, value, choices in (
            ("interest_module", self.interest_module, INTEREST_MODULES),
            ("selection", self.selection, SELECTIONS),
            ("layer_combine", self.layer_combine, LAYER_COMBINES),
            ("group_item_rep", self.group_item_rep, GROUP_ITEM_REPS),
        ):
            if value not in choices:
                raise ValueError(f"model.{name}: {value!r} is not one of {', '.join(choices)}")
        if self.interests < 1:
            raise ValueError(f"model.interests: must be >= 1, got {self.interests}")
        if self.tau <= 0:
            raise ValueError(f"model.tau: must be > 0, got {self.tau}")
        if not 0.0 <= self.eta1 <= 1.0:
            raise ValueError(f"model.eta1: must be in [0, 1], got {self.eta1}")
        if self.member_cap < 0:
            raise ValueError(f"model.member_cap: must be >= 0, got {self.member_cap}")
