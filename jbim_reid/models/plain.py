"""The plain torchreid model of stage ``plain``: built with its ImageNet (or local) backbone weights, and
wrapped behind JBIM's evaluation interface so ``JBIMEngine`` tests it on LR probes against the HR gallery.

Stage ``plain`` trains it with torchreid's ``ImageTripletEngine`` and random resolution augmentation;
its checkpoint then initialises both JBIM branches (``jbim.init_from``).
"""
from typing import Optional

import torch
import torchreid
from torch import nn

from jbim_reid.models.imagenet import BACKBONE_OPTIONAL, backbone_state_dict, imagenet_state_dict
from jbim_reid.models.weights import load_checked_weights

__all__ = ["PlainFeatures", "build_plain_model"]


class PlainFeatures(nn.Module):
    """A plain torchreid model behind JBIM's evaluation interface: one feature for probes and gallery.

    Args:
        model (nn.Module): torchreid model that returns its feature ``(B, D)`` in eval mode.
    """

    variant = "plain"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def probe_features(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, 3, H, W)``. Returns: ``(B, D)``, the model's feature (no SR, no downsampling)."""
        return self.model(x)

    def gallery_features(self, x: torch.Tensor, hw: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Args: x: ``(B, 3, H, W)``; hw: genuine sizes (unused). Returns: ``(B, D)``, as probes."""
        return self.model(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, 3, H, W)``. Returns: ``(B, D)``."""
        return self.model(x)


def build_plain_model(backbone: str, num_classes: int, pretrained_path: str = "",
                      imagenet: bool = False) -> nn.Module:
    """torchreid's ``backbone`` for softmax + triplet training, with ImageNet or local backbone weights.

    Args:
        backbone (str): torchreid model name (``model.name``).
        num_classes (int): training identities.
        pretrained_path (str): local backbone weights (``model.pretrained_path``), under the one loading rule.
        imagenet (bool): without ``pretrained_path``, the backbone's ImageNet weights (fetched once).

    Raises:
        CheckpointError: the file does not fill the backbone (naming it and what it holds).
        WeightsUnavailableError: the ImageNet weights cannot be fetched.
    """
    model = torchreid.models.build_model(backbone, num_classes=num_classes, loss="triplet", pretrained=False)
    if pretrained_path or imagenet:
        key = "model.pretrained_path" if pretrained_path else f"ImageNet weights of {backbone}"
        state = (backbone_state_dict(pretrained_path, backbone, model, what=key) if pretrained_path
                 else imagenet_state_dict(backbone, model))
        load_checked_weights(model, state, key, optional=BACKBONE_OPTIONAL, source=pretrained_path or key,
                             target=f"backbone {backbone}")
    return model
