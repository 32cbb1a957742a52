"""Feature Fusion Network (FFN) of JBIM: concat -> FC -> BN -> ReLU -> Dropout, plus its classifier."""
from typing import Optional, Tuple

import torch
from torch import nn

__all__ = ["FusionHead"]


class FusionHead(nn.Module):
    """Fuses a HIM feature and a LIM feature into one (Eq. 10 and 12 of the paper).

    Args:
        dim_h (int): HIM feature size n_h.
        dim_l (int): LIM feature size n_l.
        num_classes (int): number of training identities (classifier F^f_c).
        fusion_dim (int, optional): output size; None gives ``dim_h + dim_l`` as in the paper.
        dropout (float, optional): dropout probability after the ReLU. Default is 0.5.
    """

    def __init__(self, dim_h: int, dim_l: int, num_classes: int, fusion_dim: Optional[int] = None,
                 dropout: float = 0.5):
        super().__init__()
        self.feature_dim = int(fusion_dim) if fusion_dim else dim_h + dim_l
        self.fc = nn.Sequential(
            nn.Linear(dim_h + dim_l, self.feature_dim),
            nn.BatchNorm1d(self.feature_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
        )
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def forward(self, f_h: torch.Tensor, f_l: torch.Tensor
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Fuse two features.

        Args:
            f_h: ``(B, n_h)`` HIM feature.
            f_l: ``(B, n_l)`` LIM feature.

        Returns:
            tuple: fused feature ``(B, D)`` and identity logits ``(B, num_classes)`` (None in eval
            mode: the classifier is a training-only head).
        """
        fused = self.fc(torch.cat([f_h, f_l], dim=1))
        return fused, self.classifier(fused) if self.training else None
