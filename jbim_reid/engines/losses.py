"""Per-stream classification loss of JBIM: identity cross-entropy + hard-mining triplet (torchreid's)."""
from typing import Dict

import torch
import torchreid
from torch import nn

__all__ = ["ClassificationLoss"]


class ClassificationLoss(nn.Module):
    """L_cls = weight_x * CE(logits, pids) + weight_t * Triplet(feat, pids) for one feature stream.

    Args:
        num_classes (int): number of training identities.
        margin (float, optional): triplet margin. Default is 0.3.
        weight_t (float, optional): triplet weight; 0 skips it. Default is 1.
        weight_x (float, optional): cross-entropy weight; 0 skips it. Default is 1.
        label_smooth (bool, optional): label smoothing in the cross-entropy. Default is True.
        use_gpu (bool, optional): passed to ``torchreid.losses.CrossEntropyLoss``. Default is False.
    """

    def __init__(self, num_classes: int, margin: float = 0.3, weight_t: float = 1.0,
                 weight_x: float = 1.0, label_smooth: bool = True, use_gpu: bool = False):
        super().__init__()
        if weight_t < 0 or weight_x < 0 or weight_t + weight_x <= 0:
            raise ValueError(f"loss.triplet.weight_t ({weight_t}) and weight_x ({weight_x}) must be "
                             ">= 0 with a positive sum")
        self.weight_t, self.weight_x = weight_t, weight_x
        self.triplet = torchreid.losses.TripletLoss(margin=margin)
        self.xent = torchreid.losses.CrossEntropyLoss(num_classes=num_classes, use_gpu=use_gpu,
                                                      label_smooth=label_smooth)

    def identity(self, logits: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        """``weight_x`` * CE: logits ``(B, C)``, pids ``(B,)`` -> scalar (0 when skipped)."""
        if self.weight_x == 0:
            return logits.new_zeros(())
        return self.weight_x * self.xent(logits, pids)

    def metric(self, feat: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        """``weight_t`` * hard-mining triplet: feat ``(N, D)``, pids ``(N,)`` -> scalar (0 when skipped)."""
        if self.weight_t == 0:
            return feat.new_zeros(())
        return self.weight_t * self.triplet(feat, pids)

    def forward(self, feat: torch.Tensor, logits: torch.Tensor, pids: torch.Tensor
                ) -> Dict[str, torch.Tensor]:
        """Args: feat ``(B, D)``, logits ``(B, C)``, pids ``(B,)``.

        Returns:
            dict: ``loss`` (weighted sum, scalar) and the unweighted ``loss_t`` / ``loss_x`` computed.
        """
        out = {"loss": feat.new_zeros(())}
        if self.weight_t > 0:
            out["loss_t"] = self.triplet(feat, pids)
            out["loss"] = out["loss"] + self.weight_t * out["loss_t"]
        if self.weight_x > 0:
            out["loss_x"] = self.xent(logits, pids)
            out["loss"] = out["loss"] + self.weight_x * out["loss_x"]
        return out
