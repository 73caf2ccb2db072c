"""SRM-ResNets for ImageNet: timm's ResNet with SRM in every block's attention slot.

The architectures are the rows of :data:`srm_zoo.catalogue.IMAGENET_RESNETS`; this module
turns each into a registered timm model (``timm.create_model('srm_resnet50')``).
"""
from functools import partial
from typing import Any, Dict, Optional, Set, Union

import torch.nn as nn
from timm.models import build_model_with_cfg
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from ..catalogue import IMAGENET_RESNETS
from ..layers import SRM
from ._builder import default_cfgs_for, pretrained_kwargs, register_entrypoints
from .srm_blocks import SRMBasicBlock, SRMBottleneck, fuses_srm

__all__ = ['SRMResNet']

BLOCKS = {'basic': BasicBlock, 'bottleneck': Bottleneck}
SRM_BLOCKS = {BasicBlock: SRMBasicBlock, Bottleneck: SRMBottleneck}


def srm_cfc_names(model) -> Set[str]:
    """Full parameter names of every SRM channel-wise weight in ``model`` (excluded from weight decay)."""
    return {name for name, _ in model.named_parameters() if name.endswith('.cfc')}


class SRMResNet(ResNet):
    """timm's ResNet with an :class:`~srm_zoo.layers.SRM` in every residual block.

    Takes every ResNet kwarg. ``block`` may also be ``'basic'`` or ``'bottleneck'``;
    ``srm_pooling`` picks the style pooling (``'mean_std'``, ``'mean'``, ``'std'``). A user
    ``block_args['attn_layer']`` replaces SRM (useful to build the plain or SE counterpart).
    With SRM and ReLU, timm's blocks become their SRM-aware subclasses (same modules and keys),
    whose SRM fuses the residual add and ReLU.
    """

    def __init__(
            self,
            block: Union[str, type] = 'bottleneck',
            layers=(3, 4, 6, 3),
            srm_pooling: str = 'mean_std',
            block_args: Optional[Dict[str, Any]] = None,
            **kwargs,
    ) -> None:
        block_args = dict(block_args or {})
        block_args.setdefault('attn_layer', partial(SRM, style_pooling=srm_pooling))
        block = BLOCKS.get(block, block)
        if fuses_srm(block_args['attn_layer'], kwargs.get('act_layer', nn.ReLU)):
            block = SRM_BLOCKS.get(block, block)
        super().__init__(block=block, layers=layers, block_args=block_args, **kwargs)

    def no_weight_decay(self) -> Set[str]:
        """SRM channel-wise weights: the authors train them without weight decay."""
        return srm_cfc_names(self)


def _create_srm_resnet(variant: str, pretrained: bool = False, **kwargs) -> SRMResNet:
    return build_model_with_cfg(SRMResNet, variant, pretrained, **pretrained_kwargs(variant, pretrained, kwargs))


default_cfgs = default_cfgs_for(IMAGENET_RESNETS)
globals().update(register_entrypoints(IMAGENET_RESNETS, __name__, _create_srm_resnet))
