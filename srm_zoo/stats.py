"""Model statistics computed from the architecture itself: parameter count and GMACs."""
import functools
from dataclasses import dataclass
from typing import Optional, Tuple

import timm
import torch
from timm.models import get_pretrained_cfg
from torch.utils.flop_counter import FlopCounterMode

from .layers import SRM

__all__ = ['ModelStats', 'model_stats']


@dataclass(frozen=True)
class ModelStats:
    """Size and cost of one model at one input size; ``srm_params`` are the parameters of its SRM layers."""
    params: int
    gmacs: float
    input_size: Tuple[int, int, int]
    srm_params: int = 0

    @property
    def params_m(self) -> float:
        return self.params / 1e6


def model_stats(name: str, input_size: Optional[Tuple[int, int, int]] = None, tag: Optional[str] = None
                ) -> ModelStats:
    """Parameters and multiply-accumulates (convolutions and linear layers) of one forward pass.

    ``input_size`` defaults to that of the pretrained cfg of ``name`` (its weights ``tag``, or the
    default one). The model is built on the meta device, so this costs no memory and little time even
    for the largest models; each model and input size is measured once per process.
    """
    if input_size is None:
        input_size = get_pretrained_cfg(name if tag is None else f'{name}.{tag}').input_size
    return _measured_stats(name, tuple(input_size))


@functools.lru_cache(maxsize=None)
def _measured_stats(name: str, input_size: Tuple[int, int, int]) -> ModelStats:
    with torch.device('meta'):
        model = timm.create_model(name).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, *input_size))
    params = sum(p.numel() for p in model.parameters())
    srm_params = sum(p.numel() for module in model.modules() if isinstance(module, SRM) for p in module.parameters())
    return ModelStats(params=params, gmacs=counter.get_total_flops() / 2e9, input_size=input_size,
                      srm_params=srm_params)
