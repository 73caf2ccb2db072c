"""Model statistics computed from the architecture itself: parameter count and GMACs."""
from dataclasses import dataclass
from typing import Optional, Tuple

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['ModelStats', 'model_stats']


@dataclass(frozen=True)
class ModelStats:
    """Size and cost of one model at one input size."""
    params: int
    gmacs: float
    input_size: Tuple[int, int, int]

    @property
    def params_m(self) -> float:
        return self.params / 1e6


def model_stats(name: str, input_size: Optional[Tuple[int, int, int]] = None, **kwargs) -> ModelStats:
    """Parameters and multiply-accumulates (convolutions and linear layers) of one forward pass.

    The model is built on the meta device, so this costs no memory and little time even for
    the largest models. ``input_size`` defaults to the model's pretrained cfg.
    """
    with torch.device('meta'):
        model = timm.create_model(name, **kwargs).eval()
        input_size = tuple(input_size or model.pretrained_cfg['input_size'])
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, *input_size))
    params = sum(p.numel() for p in model.parameters())
    return ModelStats(params=params, gmacs=counter.get_total_flops() / 2e9, input_size=input_size)
