"""timm's residual blocks with SRM's gate, residual add and ReLU as one call.

:class:`SRMBasicBlock` and :class:`SRMBottleneck` keep timm's submodules (and so its state-dict
keys and initialisation) and only change ``forward``: the block ends in
``self.se(x, shortcut)``, which SRM computes as ``relu(x * gate + shortcut)`` in one pass on its
fast path. With stochastic depth active in training, the block runs timm's order of operations
(SRM, drop path, add, ReLU) instead.
"""
from functools import partial
from typing import Any

import torch
import torch.nn as nn
from timm.models.resnet import BasicBlock, Bottleneck

from ..layers import SRM

__all__ = ['SRMBasicBlock', 'SRMBottleneck', 'fuses_srm']


def fuses_srm(attn_layer: Any, act_layer: Any = nn.ReLU) -> bool:
    """Whether blocks built with ``attn_layer`` and ``act_layer`` can end in SRM's fused residual ReLU."""
    while isinstance(attn_layer, partial):
        attn_layer = attn_layer.func
    is_srm = isinstance(attn_layer, type) and issubclass(attn_layer, SRM)
    return is_srm and act_layer in (nn.ReLU, 'relu')


class SRMBasicBlock(BasicBlock):
    """timm's :class:`~timm.models.resnet.BasicBlock` whose SRM also adds the shortcut and applies the ReLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x

        x = self.conv1(x)
        x = self.bn1(x)
        x = self.drop_block(x)
        x = self.act1(x)
        x = self.aa(x)

        x = self.conv2(x)
        x = self.bn2(x)

        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        if self.drop_path is None or not self.training:
            return self.se(x, shortcut)
        x = self.drop_path(self.se(x))
        x += shortcut
        return self.act2(x)


class SRMBottleneck(Bottleneck):
    """timm's :class:`~timm.models.resnet.Bottleneck` whose SRM also adds the shortcut and applies the ReLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x

        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)

        x = self.conv2(x)
        x = self.bn2(x)
        x = self.drop_block(x)
        x = self.act2(x)
        x = self.aa(x)

        x = self.conv3(x)
        x = self.bn3(x)

        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        if self.drop_path is None or not self.training:
            return self.se(x, shortcut)
        x = self.drop_path(self.se(x))
        x += shortcut
        return self.act3(x)
