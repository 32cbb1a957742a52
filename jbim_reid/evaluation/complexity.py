"""Model complexity (parameters, MACs) through torchreid's ``compute_model_complexity``.

torchreid hooks every leaf module, runs ``model(torch.rand(1, 3, height, width))`` in eval mode and
counts the parameters of the leaf modules that ran and their multiply-accumulates (its "flops" count
one per multiply-add of convolutions and linear layers, i.e. MACs). So layers used only in training
(identity classifiers) are left out, as in the paper's Table 2, and a module run twice counts twice.
In eval mode ``JBIM(x)`` is the probe path (SR -> HIM, LIM, fusion); ``role='gallery'`` measures the
gallery path instead.

Examples::
    >>> rows = {'JBIM (ResNet-50), ours': model_complexity(model)}
    >>> print(complexity_table(rows))
"""
from typing import Dict, Mapping, Optional

import torch
import torchreid
from torch import nn

__all__ = ["PAPER_TABLE2", "model_complexity", "complexity_table"]

PAPER_TABLE2 = {"JBIM (ResNet-50), paper Table 2": {"params_m": 52.96, "macs_g": 13.96}}  # IJCV 2021


class _Role(nn.Module):
    """Calls ``model(x, role=role)`` so that torchreid's ``model(input)`` measures the chosen path."""

    def __init__(self, model: nn.Module, role: str):
        super().__init__()
        self.model, self.role = model, role

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, 3, H, W)``. Returns: the model's ``role`` features ``(B, D)``."""
        return self.model(x, role=self.role)


def model_complexity(model: nn.Module, height: int = 256, width: int = 128, role: Optional[str] = None,
                     only_conv_linear: bool = True) -> Dict[str, float]:
    """Parameters and MACs of one forward pass of a single image.

    Args:
        model (nn.Module): any model; JBIM models are measured on their probe path by default.
        height (int, optional): input height. Default is 256.
        width (int, optional): input width. Default is 128.
        role (str, optional): ``'probe'`` or ``'gallery'`` to call ``model(x, role=role)`` (JBIM);
            None calls ``model(x)``. Default is None.
        only_conv_linear (bool, optional): count MACs of convolutions and linear layers only
            (torchreid's default). Default is True.

    Returns:
        dict: ``params_m`` (millions, modules used by the forward pass), ``macs_g`` (billions) and
        ``total_params_m`` (millions, every parameter of the model, training-only layers included).
    """
    if role not in (None, "probe", "gallery"):
        raise ValueError(f"Unknown role '{role}'; expected None, 'probe' or 'gallery'")
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height} x {width}")
    measured = model if role is None else _Role(model, role)
    with torch.no_grad():
        params, macs = torchreid.utils.compute_model_complexity(measured, (1, 3, height, width), verbose=False,
                                                                only_conv_linear=only_conv_linear)
    total = sum(p.numel() for p in model.parameters())
    return {"params_m": params / 1e6, "macs_g": macs / 1e9, "total_params_m": total / 1e6}


def complexity_table(rows: Mapping[str, Mapping[str, float]], include_paper: bool = True) -> str:
    """A markdown table of complexities, with the paper's Table 2 row for comparison.

    Args:
        rows (dict): name -> :func:`model_complexity` output (``params_m``, ``macs_g``).
        include_paper (bool, optional): add the paper's JBIM (ResNet-50) row. Default is True.

    Returns:
        str: the table, ending with a newline.
    """
    table = dict(PAPER_TABLE2) if include_paper else {}
    table.update(rows)
    if not table:
        raise ValueError("rows is empty: expected at least one model")
    lines = ["| model | params (M) | MACs (G) |", "| --- | --- | --- |"]
    for name, row in table.items():
        missing = [k for k in ("params_m", "macs_g") if k not in row]
        if missing:
            raise ValueError(f"row '{name}' lacks {missing}; expected model_complexity's output")
        lines.append(f"| {name} | {row['params_m']:.2f} | {row['macs_g']:.2f} |")
    return "\n".join(lines) + "\n"
