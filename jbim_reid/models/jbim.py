"""The JBIM model (Zheng et al., IJCV 2021): SR module, HIM and LIM re-id branches, fusion head.

Shapes: images are ``(B, 3, H, W)`` normalised tensors at the network input size (``height`` x
``width``); LR images are already upscaled to that size by the data transforms. Features are
``(B, D)``; logits ``(B, num_classes)``. The SR module alone works on [0, 1] RGB: the model
de-normalises its input and re-normalises its output (``JBIM.super_resolve``).
"""
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
import torchreid
from torch import nn

from jbim_reid.models.fusion import FusionHead
from jbim_reid.models.imagenet import BACKBONE_OPTIONAL, backbone_state_dict, imagenet_state_dict, init_state_dict
from jbim_reid.models.pixel import IMAGENET_MEAN, IMAGENET_STD, PixelNorm
from jbim_reid.models.sr import build_sr
from jbim_reid.models.weights import load_checked_weights, load_sr_weights
from jbim_reid.utils.fileio import load_torch_file

__all__ = ["BNNeck", "ReidBranch", "JBIM", "VARIANTS", "load_jbim_checkpoint",
           "synthesize_lr"]

Ratios = Union[float, Sequence[float], torch.Tensor]  # one ratio for a batch, or one per image

VARIANTS = {  # jbim.variant -> modules it holds
    "jbim": ("sr", "him", "lim", "fusion"),
    "him": ("sr", "him"),
    "lim": ("lim",),
    "him_lim": ("sr", "him", "lim"),
}


def synthesize_lr(x_hr: torch.Tensor, hw: Optional[torch.Tensor] = None, ratio: Ratios = 0.5
                  ) -> torch.Tensor:
    """Synthetic LR image x^{h2l} (and down_m(x)): shrink by ``ratio`` of the *genuine* size.

    Each image is resized (bicubic, antialiased) to ``round(m*h) x round(m*w)`` of its genuine
    size ``(h, w)`` on disk, then bicubic back up to the tensor's size. The ratio is taken of the
    genuine size, not of the network-size tensor: a 128x48 VIPeR image at 256x128 shrunk by 1/2
    must lose detail, not come back as itself. Explicit output sizes (not ``scale_factor``) keep
    the content aligned for ratios such as 1/3.

    Args:
        x_hr: ``(B, 3, H, W)`` HR images at the network size.
        hw: ``(B, 2)`` genuine sizes ``(h, w)``; None takes the tensor size for every image
            (for inputs whose genuine size is unknown).
        ratio (float or sequence/tensor of B floats): downsampling ratio m in (0, 1], one for the
            batch or one per image. Default is 0.5.

    Returns:
        torch.Tensor: ``(B, 3, H, W)``.
    """
    batch = x_hr.shape[0]
    size = tuple(x_hr.shape[-2:])
    if hw is None:
        hw = torch.tensor([size] * batch)
    hw = torch.as_tensor(hw).reshape(-1, 2).tolist()
    if len(hw) != batch:
        raise ValueError(f"synthesize_lr: {len(hw)} genuine sizes for a batch of {batch}")
    ratios = torch.as_tensor(ratio, dtype=torch.float64).reshape(-1).tolist()
    if len(ratios) == 1:
        ratios = ratios * batch
    if len(ratios) != batch:
        raise ValueError(f"synthesize_lr: {len(ratios)} ratios for a batch of {batch}")
    if not all(0 < m <= 1 for m in ratios):
        raise ValueError(f"synthesize_lr: ratios must be in (0, 1], got {sorted(set(ratios))}")
    out = torch.empty_like(x_hr)
    groups: Dict[tuple, list] = {}
    for i, ((h, w), m) in enumerate(zip(hw, ratios)):
        small = (max(1, round(m * h)), max(1, round(m * w)))
        groups.setdefault(small, []).append(i)
    for small, idx in groups.items():
        low = F.interpolate(x_hr[idx], size=small, mode="bicubic", align_corners=False, antialias=True)
        out[idx] = F.interpolate(low, size=size, mode="bicubic", align_corners=False)
    return out


class BNNeck(nn.BatchNorm1d):
    """BatchNorm1d whose bias is fixed at zero (Luo et al. 2019).

    The bias is a buffer, not a parameter, so it stays frozen even when torchreid's
    ``open_all_layers`` sets ``requires_grad`` on every parameter.
    """

    def __init__(self, dim: int):
        super().__init__(dim)
        del self.bias
        self.register_buffer("bias", torch.zeros(dim))


class ReidBranch(nn.Module):
    """A torchreid backbone with a BNNeck and an identity classifier (HIM's or LIM's F_fe + F_c).

    Args:
        backbone (str): any name of ``torchreid.models.show_avai_models()``.
        num_classes (int): number of training identities.
    """

    def __init__(self, backbone: str, num_classes: int):
        super().__init__()
        self.backbone = torchreid.models.build_model(backbone, num_classes=1, loss="softmax",
                                                     pretrained=False)
        in_dim = getattr(self.backbone, "feature_dim", None)
        if in_dim is None:
            in_dim = self.backbone.classifier.in_features
        self.backbone.classifier = nn.Identity()  # the backbone returns its feature v in any mode
        self.feature_dim = int(in_dim)
        self.neck = BNNeck(self.feature_dim)
        self.classifier = nn.Linear(self.feature_dim, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Args: x: ``(B, 3, H, W)``.

        Returns:
            dict: ``feat`` ``(B, D)`` (before the neck, for the triplet loss), ``bn`` ``(B, D)`` (after
            the neck: test feature and fusion input), and in train mode only ``logits``
            ``(B, num_classes)`` (eval returns features only, as torchreid's models do, so the
            classifier is not part of the test-time cost).
        """
        feat = self.backbone(x)
        bn = self.neck(feat)
        out = {"feat": feat, "bn": bn}
        if self.training:
            out["logits"] = self.classifier(bn)
        return out


class JBIM(nn.Module):
    """Joint Bilateral-resolution Identity Modeling.

    Args:
        num_classes (int): number of training identities.
        backbone (str, optional): torchreid backbone of HIM and LIM (separate weights). Default is
            ``resnet50``.
        sr (str, optional): SR module name in ``SR_MODELS``; it runs in [0, 1] RGB (see
            :meth:`super_resolve`). Default is ``srcnn``.
        ratio (float, optional): the anchor's ratio m: of the gallery's LIM input down_m(x), and of
            the synthetic LR stream unless ``train_ratios`` says otherwise. Default is 0.5.
        train_ratios (sequence of float, optional): ratios of the synthetic LR stream in training,
            one drawn per image; None or empty = ``(ratio,)``. Default is None.
        norm_mean, norm_std (sequence of float, optional): the data's normalisation (RGB), undone
            around the SR module. Default is ImageNet's (torchreid's default).
        fusion_dim (int, optional): FFN output size; None gives n_h + n_l. Default is None.
        dropout (float, optional): FFN dropout. Default is 0.5.
        height (int, optional): network input height. Default is 256.
        width (int, optional): network input width. Default is 128.
        variant (str, optional): ``jbim`` (SR+HIM+LIM+FFN, fused test feature), ``him`` (SR+HIM),
            ``lim`` (LIM only) or ``him_lim`` (SR+HIM and LIM, features concatenated at test).
            Default is ``jbim``.
        backbone_pretrained_path (str, optional): local weights loaded into both backbones.
        init_from (str, optional): a torchreid model checkpoint of ``backbone`` (``model.pth.tar-N`` of
            torchreid's engines, or its state dict) initialising both backbones, classifier dropped;
            ``him_pretrained_path`` / ``lim_pretrained_path`` win over it.
        sr_pretrained_path (str, optional): local weights loaded into the SR module.
        him_pretrained_path (str, optional): overrides ``backbone_pretrained_path`` for HIM.
        lim_pretrained_path (str, optional): overrides ``backbone_pretrained_path`` for LIM.
        backbone_pretrained (bool, optional): load the backbone's ImageNet weights (downloaded once
            into torchreid's cache, see ``jbim_reid.models.imagenet``) into every backbone that has
            no local weights file. Default is False (random backbones).

    Train mode: ``model(x_lr, x_hr)`` returns a dict (see :meth:`forward_train`).
    Eval mode: ``model(x, role='probe')`` = :meth:`probe_features`, ``role='gallery'`` =
    :meth:`gallery_features`, both ``(B, feature_dim)``.

    Examples::
        >>> model = JBIM(num_classes=25, backbone='osnet_x1_0', ratio=0.5)
        >>> model.eval()
        >>> qf = model.probe_features(torch.rand(2, 3, 256, 128))   # (2, 1024)
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", sr: str = "srcnn",
                 ratio: float = 0.5, fusion_dim: Optional[int] = None, dropout: float = 0.5,
                 height: int = 256, width: int = 128, variant: str = "jbim",
                 backbone_pretrained_path: str = "", sr_pretrained_path: str = "",
                 him_pretrained_path: str = "", lim_pretrained_path: str = "",
                 backbone_pretrained: bool = False, train_ratios: Optional[Sequence[float]] = None,
                 norm_mean: Sequence[float] = IMAGENET_MEAN, norm_std: Sequence[float] = IMAGENET_STD,
                 init_from: str = ""):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"Unknown jbim.variant '{variant}'; expected one of {list(VARIANTS)}")
        if not 0 < ratio <= 1:
            raise ValueError(f"jbim.ratio must be in (0, 1], got {ratio}")
        train_ratios = [float(m) for m in (train_ratios or [ratio])]
        if not all(0 < m <= 1 for m in train_ratios):
            raise ValueError(f"jbim.train_ratios must all be in (0, 1], got {train_ratios}")
        self.pixels = PixelNorm(norm_mean, norm_std)
        self.jbim_kwargs = dict(
            num_classes=num_classes, backbone=backbone, sr=sr, ratio=ratio, fusion_dim=fusion_dim,
            dropout=dropout, height=height, width=width, variant=variant,
            train_ratios=train_ratios, norm_mean=[float(v) for v in norm_mean],
            norm_std=[float(v) for v in norm_std],
        )
        self.num_classes = num_classes
        self.variant = variant
        self.ratio = ratio
        self.train_ratios = train_ratios
        self.height, self.width = height, width
        parts = VARIANTS[variant]
        self.sr = build_sr(sr) if "sr" in parts else None
        self.him = ReidBranch(backbone, num_classes) if "him" in parts else None
        self.lim = ReidBranch(backbone, num_classes) if "lim" in parts else None
        self.fusion = None
        if "fusion" in parts:
            self.fusion = FusionHead(self.him.feature_dim, self.lim.feature_dim, num_classes,
                                     fusion_dim=fusion_dim, dropout=dropout)
        if variant == "jbim":
            self.feature_dim = self.fusion.feature_dim
        else:
            self.feature_dim = sum(b.feature_dim for b in (self.him, self.lim) if b is not None)
        self.load_weights(backbone_pretrained_path, sr_pretrained_path, him_pretrained_path or init_from,
                          lim_pretrained_path or init_from, imagenet=backbone_pretrained, init_from=init_from)

    def load_weights(self, backbone_path: str = "", sr_path: str = "", him_path: str = "",
                     lim_path: str = "", imagenet: bool = False, init_from: str = "") -> Dict[str, tuple]:
        """Load pretrained weights into the backbones and the SR module.

        Every file follows the one loading rule (``jbim_reid.models.weights.load_checked_weights``):
        read safely, and refused with a ``CheckpointError`` naming its config key unless it fills the
        module it is for. Each backbone file (and the ImageNet weights) is read once and loaded into
        every backbone that uses it.

        Args:
            backbone_path (str): file for both backbones (ImageNet or re-id weights).
            sr_path (str): file for the SR module: weights of the bare SR net (keys ``body.*``),
                or a checkpoint of stage ``sr`` or of a JBIM model (keys ``sr.*``); ignored by
                ``bicubic``, which has none (a joint stage of a bicubic JBIM passes its HIM checkpoint).
            him_path (str): file for HIM's backbone, overriding ``backbone_path``.
            lim_path (str): file for LIM's backbone, overriding ``backbone_path``.
            imagenet (bool): the backbone's ImageNet weights for backbones without a file.
            init_from (str): which of the files is a torchreid model checkpoint (``jbim.init_from``):
                it must not be a JBIM checkpoint, and its classifier is dropped.

        Returns:
            dict: part name -> ``(loaded keys, skipped keys)`` for every part that was loaded.
        """
        backbone = self.jbim_kwargs["backbone"]
        report, states = {}, {}
        for name, own_path in (("him", him_path), ("lim", lim_path)):
            branch = getattr(self, name)
            path = own_path or backbone_path
            if branch is None or not (path or imagenet):
                continue
            if path and path == init_from:  # the config key the file came from, for errors
                key = "jbim.init_from"
            elif path:
                key = f"jbim.{name}_pretrained_path" if own_path else "model.pretrained_path"
            else:
                key = f"ImageNet weights of {backbone}"
            if path not in states:
                states[path] = (init_state_dict(path, backbone, branch.backbone) if key == "jbim.init_from"
                                else backbone_state_dict(path, backbone, branch.backbone, what=key) if path
                                else imagenet_state_dict(backbone, branch.backbone))
            report[name] = load_checked_weights(branch.backbone, states[path], key, optional=BACKBONE_OPTIONAL,
                                                source=path or key, target=f"backbone {backbone}")
        if sr_path and self.sr is not None and self.sr.state_dict():  # bicubic has no weights to load
            report["sr"] = load_sr_weights(self.sr, sr_path)
        return report

    def synthesize_lr(self, x_hr: torch.Tensor, hw: Optional[torch.Tensor] = None,
                      ratio: Optional[Ratios] = None) -> torch.Tensor:
        """:func:`synthesize_lr` with the model's ratio m by default (see there).

        Args:
            x_hr: ``(B, 3, H, W)`` HR images at the network size.
            hw: ``(B, 2)`` genuine sizes ``(h, w)``; None takes the tensor size for every image.
            ratio (float or sequence/tensor of B floats, optional): downsampling ratio, one for the
                batch or one per image; None uses ``self.ratio``.

        Returns:
            torch.Tensor: ``(B, 3, H, W)``.
        """
        return synthesize_lr(x_hr, hw, self.ratio if ratio is None else ratio)

    def draw_train_ratios(self, batch_size: int) -> List[float]:
        """One synthetic-LR ratio per training image, drawn uniformly from ``train_ratios``.

        Args:
            batch_size (int): number of images.

        Returns:
            list of float: ``batch_size`` ratios (torch's global generator, so seeded runs repeat).
        """
        picks = torch.randint(len(self.train_ratios), (batch_size,)).tolist()
        return [self.train_ratios[i] for i in picks]

    def super_resolve(self, x: torch.Tensor) -> torch.Tensor:
        """F_sr in pixel space: de-normalise (``norm_mean``/``norm_std``) -> SR -> re-normalise.

        Args:
            x: ``(B, 3, H, W)`` normalised LR image upscaled to the network size.

        Returns:
            torch.Tensor: ``(B, 3, H, W)`` normalised SR image.
        """
        self._require("sr")
        return self.pixels.from_pixels(self.sr(self.pixels.to_pixels(x)))

    def forward_train(self, x_lr: torch.Tensor, x_hr: torch.Tensor,
                      branches: Optional[tuple] = None, synthetic_lr: bool = True,
                      hw_hr: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Every training stream of Fig. 4 that ``branches`` needs.

        The synthetic LR image x^{h2l} is made from ``x_hr`` at a ratio drawn per image from
        ``train_ratios`` (:meth:`draw_train_ratios`) of its genuine size ``hw_hr``.

        Args:
            x_lr: ``(B, 3, H, W)`` real LR images (upscaled).
            x_hr: ``(B, 3, H, W)`` HR images of the same identities (other camera).
            branches (tuple, optional): subset of ``him``, ``lim``, ``fusion`` to compute; None
                computes every branch the variant has.
            synthetic_lr (bool): HIM's synthetic LR stream F_sr(x^{h2l}) (the only stream L_sr has
                a target for). False is the ablation of the paper's Table 7: HIM sees x^h and x^l
                only and there is no ``sr_h2l``; LIM keeps its x^{h2l} stream and the FFN's HR side
                stays F_fus(HIM(x^h), LIM(x^{h2l})), as in the gallery's test feature.
            hw_hr: ``(B, 2)`` genuine sizes of ``x_hr`` (the synthetic LR is made from them); None
                takes the tensor size.

        Returns:
            dict: ``sr_h2l`` ``(B, 3, H, W)`` (normalised SR of the synthetic LR, with HIM and
            ``synthetic_lr``); per stream ``<branch>_<stream>_{feat,bn,logits}`` for branch
            ``him`` (streams ``hr``, ``h2l``, ``lr``), ``lim`` (``lr``, ``h2l``) and ``fus``
            (``lr``, ``hr``: ``_feat`` ``(B, D)`` and ``_logits``).
        """
        if branches is None:
            branches = tuple(b for b in ("him", "lim", "fusion") if getattr(self, b) is not None)
        out = {}
        need_him = "him" in branches or "fusion" in branches
        need_lim = "lim" in branches or "fusion" in branches
        him_h2l = need_him and synthetic_lr
        x_h2l = None
        if need_lim or him_h2l:
            x_h2l = self.synthesize_lr(x_hr, hw_hr, self.draw_train_ratios(x_hr.shape[0]))
        if need_him:
            self._require("him")
            streams = {"hr": x_hr, "lr": self.super_resolve(x_lr)}
            if him_h2l:
                out["sr_h2l"] = streams["h2l"] = self.super_resolve(x_h2l)
            for stream, x in streams.items():
                for key, value in self.him(x).items():
                    out[f"him_{stream}_{key}"] = value
        if need_lim:
            self._require("lim")
            for stream, x in {"lr": x_lr, "h2l": x_h2l}.items():
                for key, value in self.lim(x).items():
                    out[f"lim_{stream}_{key}"] = value
        if "fusion" in branches:
            self._require("fusion")
            for side, (h, l) in {"lr": ("lr", "lr"), "hr": ("hr", "h2l")}.items():
                feat, logits = self.fusion(out[f"him_{h}_bn"], out[f"lim_{l}_bn"])
                out[f"fus_{side}_feat"], out[f"fus_{side}_logits"] = feat, logits
        return out

    def _require(self, part: str) -> None:
        if getattr(self, part) is None:
            raise ValueError(f"JBIM variant '{self.variant}' has no '{part}' module "
                             f"(it holds {VARIANTS[self.variant]})")

    def _features(self, him_input, lim_input) -> torch.Tensor:
        f_h = self.him(him_input)["bn"] if self.him is not None else None
        f_l = self.lim(lim_input)["bn"] if self.lim is not None else None
        if self.fusion is not None:
            return self.fusion(f_h, f_l)[0]
        return torch.cat([f for f in (f_h, f_l) if f is not None], dim=1)

    def probe_features(self, x_lr: torch.Tensor) -> torch.Tensor:
        """Test feature of LR probes: ``F_fus(HIM(SR(x)), LIM(x))`` (or the variant's part of it);
        SR runs in pixel space (:meth:`super_resolve`).

        Args:
            x_lr: ``(B, 3, H, W)`` LR images upscaled to the network size.

        Returns:
            torch.Tensor: ``(B, feature_dim)``.
        """
        return self._features(self.super_resolve(x_lr) if self.sr is not None else None, x_lr)

    def gallery_features(self, x_hr: torch.Tensor, hw: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Test feature of HR gallery images: ``F_fus(HIM(x), LIM(down_m(x)))``.

        Args:
            x_hr: ``(B, 3, H, W)`` HR images.
            hw: ``(B, 2)`` genuine sizes of the images (down_m shrinks those); None takes the
                tensor size.

        Returns:
            torch.Tensor: ``(B, feature_dim)``.
        """
        x_low = self.synthesize_lr(x_hr, hw) if self.lim is not None else None
        return self._features(x_hr, x_low)

    def gallery_features_pair(self, x_hr: torch.Tensor, x_low: Optional[torch.Tensor]) -> torch.Tensor:
        """:meth:`gallery_features` with down_m done by the caller: ``F_fus(HIM(x_hr), LIM(x_low))``.

        The exported gallery graph uses this (a per-image resize to each genuine size does not fit
        one ONNX graph); ``x_low`` must be ``synthesize_lr(x_hr, hw)``.

        Args:
            x_hr: ``(B, 3, H, W)`` HR images.
            x_low: ``(B, 3, H, W)`` their down_m versions; ignored (may be None) without LIM.

        Returns:
            torch.Tensor: ``(B, feature_dim)``.
        """
        return self._features(x_hr, x_low if self.lim is not None else None)

    def forward(self, x: torch.Tensor, x_hr: Optional[torch.Tensor] = None, role: str = "probe",
                hw: Optional[torch.Tensor] = None, **kwargs):
        """Train mode: ``forward_train(x, x_hr, **kwargs)`` (dict). Eval mode: features ``(B, D)``.

        Args:
            x: ``(B, 3, H, W)``: LR images in train mode; probe or gallery images in eval mode.
            x_hr: ``(B, 3, H, W)`` HR images (train mode only).
            role (str): ``probe`` or ``gallery`` (eval mode only). Default is ``probe``.
            hw: ``(B, 2)`` genuine sizes of gallery images (eval mode, ``role='gallery'``).
        """
        if self.training and x_hr is not None:
            return self.forward_train(x, x_hr, **kwargs)
        if role == "probe":
            return self.probe_features(x)
        if role == "gallery":
            return self.gallery_features(x, hw)
        raise ValueError(f"Unknown role '{role}'; expected 'probe' or 'gallery'")


def jbim_from_checkpoint(checkpoint: Mapping, source: str = "checkpoint", what: str = "checkpoint") -> JBIM:
    """Rebuild a JBIM model from an already loaded ``JBIMEngine.save_model`` checkpoint.

    Args:
        checkpoint (mapping): with ``state_dict`` and ``jbim_kwargs``.
        source (str): where it came from, for the error.
        what (str): the config key or argument it came from (e.g. ``model.load_weights``).

    Returns:
        JBIM: the model with the checkpoint's weights, in eval mode.

    Raises:
        CheckpointError: the weights do not fill the model of its own ``jbim_kwargs`` (the loading rule
            of ``jbim_reid.models.weights``).
    """
    if "jbim_kwargs" not in checkpoint:
        raise KeyError(f"'{source}' has no 'jbim_kwargs': not written by JBIMEngine.save_model")
    model = JBIM(**checkpoint["jbim_kwargs"])
    load_checked_weights(model, checkpoint, what, source=source, target="the JBIM model of its jbim_kwargs",
                         verbose=False)
    model.recipe = checkpoint.get("recipe")  # how it was trained (jbim.recipe), None for older files
    return model.eval()


def load_jbim_checkpoint(path: str, map_location: Optional[str] = None) -> JBIM:
    """Rebuild a JBIM model from a checkpoint written by ``JBIMEngine.save_model``.

    Args:
        path (str): checkpoint file with ``state_dict`` and ``jbim_kwargs``.
        map_location: unused, kept for API symmetry (torchreid maps to CPU without CUDA).

    Returns:
        JBIM: the model with the checkpoint's weights, in eval mode.
    """
    return jbim_from_checkpoint(load_torch_file(path, what="JBIM checkpoint"), source=path, what="JBIM checkpoint")
