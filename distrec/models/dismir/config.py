"""The ``model:`` section of a DisMIR config (paper defaults: d = K = 64, one routing pass,
N_o = 100 partition negatives, 10 hard-negative candidates)."""

from __future__ import annotations

from dataclasses import dataclass

BACKBONES = ("capsule", "self_attention")
READOUTS = ("attention", "mean", "max")
REGULARIZERS = ("none", "routing_variance", "backward_flow")


@dataclass
class DisMIRConfig:
    dim: int = 64  # d = K: item embedding = partition weights
    num_interests: int = 4  # F
    max_len: int = 20  # kappa: history window
    backbone: str = "capsule"  # capsule (DisMIR/MIR) | self_attention (ComiRec-SA plug-in)
    routing_iters: int = 1  # capsule routing passes
    routing_noise_std: float = 1.0  # scale of the random initial routing logits (MIND-style)
    routing_grad: bool = True  # let gradients flow through the routing logits
    readout: str = "attention"  # attention (eq. 5, DPI) | mean (w/o DPI) | max (ComiRec)
    partition_weight: float = 0.01  # lambda; 0 = MIR
    partition_negatives: int = 100  # N_o
    hard_candidates: int = 10  # uniform candidates; the hardest is the negative
    # > 0 (not the paper): the candidates of a step come from one shared uniform pool of this
    # many items (still uniform per candidate; bounds the table rows a step touches)
    negative_pool: int = 0
    regularizer: str = "none"  # none | routing_variance (MIR-RV) | backward_flow (MIR-BF)
    reg_weight: float = 0.0  # weight of the regulariser
    init_std: float = 0.1  # std of the uniform item-embedding init
    exclude_history: bool = False  # mask the history from the ranking (ComiRec: no)

    def validate(self) -> None:
        from distrec.config import ConfigError

        for key, value, choices in (
            ("backbone", self.backbone, BACKBONES),
            ("readout", self.readout, READOUTS),
            ("regularizer", self.regularizer, REGULARIZERS),
        ):
            if value not in choices:
                raise ConfigError(f"model.{key}: {value!r} is not one of {', '.join(choices)}")
        for key in ("dim", "num_interests", "max_len", "hard_candidates"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key}: must be positive, got {getattr(self, key)}")
        if self.negative_pool < 0:
            raise ConfigError(f"model.negative_pool: must be >= 0, got {self.negative_pool}")
        if self.partition_weight < 0 or self.reg_weight < 0:
            raise ConfigError("model.partition_weight and model.reg_weight must be >= 0")
        if self.partition_weight > 0 and self.partition_negatives <= 0:
            raise ConfigError(
                "model.partition_negatives: must be positive when partition_weight > 0"
            )
