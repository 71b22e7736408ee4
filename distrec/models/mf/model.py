"""Matrix factorisation trained with BPR (Rendle et al., 2009): score(u, i) = <e_u, e_i>.

Two TorchRec tables in one EmbeddingBagCollection: ``user`` (feature ``user``) and ``item``
(features ``pos`` and ``neg``), so one sharded lookup serves the whole step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from distrec.models.api import Batch, RecModel


@dataclass
class MFConfig:
    dim: int = 64  # embedding dimension D
    init_std: float = 0.1  # normal init of both tables


class MF(RecModel):
    """BPR-MF. ``forward`` takes Batch.sparse["ebc"] with keys user [B], pos [B], neg [B x k].

    With k > 1 negatives per bag the bag is mean-pooled, so the loss compares the positive score
    with the mean negative score (exact BPR for the default k = 1).

    Example::

        model = MF(MFConfig(dim=8), num_users=10, num_items=20, l2=1e-4, num_negatives=1)
        loss, terms = model(batch)
    """

    pipelineable = True

    def __init__(
        self,
        cfg: MFConfig,
        num_users: int,
        num_items: int,
        l2: float,
        num_negatives: int,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.l2 = l2
        self.num_negatives = num_negatives
        std = cfg.init_std

        def init(w: torch.Tensor) -> None:
            torch.nn.init.normal_(w, std=std)

        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name="user",
                    embedding_dim=cfg.dim,
                    num_embeddings=num_users,
                    feature_names=["user"],
                    pooling=PoolingType.SUM,
                    init_fn=init,
                ),
                EmbeddingBagConfig(
                    name="item",
                    embedding_dim=cfg.dim,
                    num_embeddings=num_items,
                    feature_names=["pos", "neg"],
                    pooling=PoolingType.MEAN,
                    init_fn=init,
                ),
            ],
            device=device,
        )

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """BPR loss over the batch: mean -log sigmoid(<u,p> - <u,n>) + l2 * (|u|^2+|p|^2+|n|^2)/2B."""
        kt = self.ebc(batch.sparse["ebc"]).to_dict()
        u, p, n = kt["user"], kt["pos"], kt["neg"]  # [B, D] each
        bpr = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
        reg = self.l2 * 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / u.shape[0]
        return bpr + reg, {"bpr": bpr.detach(), "reg": reg.detach()}

    def query(self, batch: Batch, task: str = "user") -> torch.Tensor:
        """User embeddings [B, D] of the batch's ``user`` feature."""
        return self.ebc(batch.sparse["ebc"])["user"]

    def item_reps(self, batch: Batch) -> torch.Tensor:
        """Item embeddings [N, D] of the batch's ``pos`` feature."""
        return self.ebc(batch.sparse["ebc"])["pos"]
