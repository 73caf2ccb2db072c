"""timm's residual blocks whose last BatchNorm, SRM, residual add and ReLU run as one block tail.

:class:`SRMBasicBlock` and :class:`SRMBottleneck` keep timm's submodules (and so its state-dict
keys and initialisation) and only change ``forward``. On SRM's fast path the block's last
BatchNorm is folded away: in inference outside the Triton kernels into the last convolution's
weight and bias (:func:`~srm_zoo.layers.srm_fast.conv_norm`), in training and on the Triton kernels
into SRM's pass (:meth:`~srm_zoo.layers.SRM.forward_after_norm`). Otherwise the block ends in
``self.se(bn(x), shortcut)``, which SRM computes as ``relu(x * gate + shortcut)`` (without autograd,
written into ``bn(x)``). The block's last activation (``act2`` of a BasicBlock, ``act3`` of a Bottleneck)
is then not called: SRM applies the ReLU. With stochastic depth active in training, the block runs
timm's order of operations (BatchNorm, SRM, drop path, add, ReLU) instead. The tail also runs the
downsample, after the last convolution: in inference on the Triton kernels the tail takes the
downsample's BatchNorm too (:func:`~srm_zoo.layers.srm_fast.shortcut_norm_to_fold`).

Where hooks (forward or backward) observe the tail (on the last BatchNorm, on SRM, on SRM's BatchNorm or
on the last activation, or global module hooks), the block calls each of those modules in timm's order
and overwrites none of their outputs, so every hook fires and sees the values it would see in timm's block.
"""
from functools import partial
from typing import Any, Optional, Tuple

import torch
import torch.nn as nn
from timm.models.resnet import BasicBlock, Bottleneck

from ..layers import SRM
from ..layers.srm import use_reference_path
from ..layers.srm_fast import conv_folds_norm, conv_norm, has_hooks, norm_folds_into_srm, shortcut_norm_to_fold

__all__ = ['SRMBasicBlock', 'SRMBottleneck', 'fuses_srm']


def fuses_srm(attn_layer: Any, act_layer: Any = nn.ReLU) -> bool:
    """Whether blocks built with ``attn_layer`` and ``act_layer`` can end in SRM's fused residual ReLU."""
    while isinstance(attn_layer, partial):
        attn_layer = attn_layer.func
    is_srm = isinstance(attn_layer, type) and issubclass(attn_layer, SRM)
    return is_srm and act_layer in (nn.ReLU, 'relu')


class _SRMTail:
    """The tail shared by the SRM blocks: ``relu(SRM(norm(conv(x))) + shortcut)`` from the input of the
    last convolution.

    ``last_conv`` and ``last_norm`` name the block's last convolution and the BatchNorm after it, and
    ``_last_conv(x)``, ``_last_norm(x)`` apply them (TorchScript cannot look a module up by name);
    ``last_act`` names the block's last activation, which SRM's fused ReLU replaces.
    """
    last_conv: str
    last_norm: str
    last_act: str

    def _conv_tail(self, x: torch.Tensor, block_input: torch.Tensor) -> torch.Tensor:
        """The tail from the last convolution's input ``x`` and the block's input (downsampled here, for the
        shortcut)."""
        if not torch.jit.is_scripting() and self._takes_fast_path():
            return self._fast_conv_tail(x, block_input)
        return self._module_tail(self._last_conv(x), self._shortcut(block_input))

    def _shortcut(self, block_input: torch.Tensor) -> torch.Tensor:
        """The residual branch: the block's input, downsampled where the block downsamples."""
        if self.downsample is not None:
            return self.downsample(block_input)
        return block_input

    def _tail(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """The tail from the last convolution's output ``x``."""
        if not torch.jit.is_scripting() and self._takes_fast_path():
            return self._fast_tail(x, shortcut)
        return self._module_tail(x, shortcut)

    def _module_tail(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """The tail with the block's last BatchNorm run as a module."""
        x = self._last_norm(x)
        if not torch.jit.is_scripting() and self._runs_unfused():
            return self._unfused_tail(x, shortcut)
        return self._srm_tail(x, shortcut)

    def _srm_tail(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """The tail from the last BatchNorm's output ``x``, SRM fusing the residual add and ReLU; under TorchScript
        (which computes SRM as published, and compiles ``se`` as it is, an SRM subclass's own ``forward`` too)
        the attention, stochastic depth, add and ReLU one after the other, as timm's block."""
        if torch.jit.is_scripting():
            x = self.se(x)
            if self.drop_path is not None:
                x = self.drop_path(x)
            return torch.relu(x + shortcut)
        if self.drop_path is None or not self.training:
            return self.se(x, shortcut)
        x = self.drop_path(self.se(x))
        x += shortcut
        return torch.relu(x)

    @torch.jit.unused
    def _unfused_tail(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """timm's tail from the last BatchNorm's output ``x``, each module called: the attention (where there is
        one), drop path, the residual add (into a new tensor: hooks may hold the attention's output) and the
        last activation."""
        attention = self._modules['se']
        if attention is not None:
            x = attention(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        return self._modules[self.last_act](x + shortcut)

    @torch.jit.unused
    def _runs_unfused(self) -> bool:
        """Whether the tail must run timm's modules one by one (:meth:`_unfused_tail`): ``se`` is no SRM any
        more (another attention module, an ``nn.Identity`` or None put in its place after the block was built),
        or an SRM subclass with maths of its own (:attr:`~srm_zoo.layers.SRM.published_maths`), or hooks observe
        a module that the fused tail skips, or an output it overwrites: hooks on the last BatchNorm, SRM, SRM's
        BatchNorm, stochastic depth (skipped in eval mode) or the last activation
        (:func:`~srm_zoo.layers.srm_fast.has_hooks`). Dict lookups only: asked on every call."""
        modules = self._modules
        srm = modules['se']
        if not isinstance(srm, SRM) or not srm.published_maths:
            return True
        tail = (modules[self.last_norm], srm, srm._modules['bn'], modules[self.last_act])
        drop_path = modules.get('drop_path')  # None: not a module
        return has_hooks(*tail) if drop_path is None else has_hooks(drop_path, *tail)

    @torch.jit.unused
    def _takes_fast_path(self) -> bool:
        """Neither stochastic depth in training, the reference path nor an unfused tail (:meth:`_runs_unfused`)
        rule the folded tails out (asked once per block, before anything looks at the inputs: under FX tracing
        they are proxies)."""
        return not ((self.drop_path is not None and self.training) or use_reference_path()
                    or self._runs_unfused())

    @torch.jit.unused
    def _fast_conv_tail(self, x: torch.Tensor, block_input: torch.Tensor) -> torch.Tensor:
        """The fast tail from the last convolution's input: the block's last BatchNorm folded into that
        convolution where it folds (:func:`~srm_zoo.layers.srm_fast.conv_folds_norm`), else
        :meth:`_fast_tail` of the convolution's output, which may also take the downsample's BatchNorm
        (:meth:`_unnormalised_shortcut`)."""
        conv, norm = getattr(self, self.last_conv), getattr(self, self.last_norm)
        if conv_folds_norm(conv, norm, x):
            return self.se(conv_norm(conv, norm, x), self._shortcut(block_input))
        y = conv(x)
        return self._fast_tail(y, *self._unnormalised_shortcut(block_input, y))

    @torch.jit.unused
    def _unnormalised_shortcut(self, block_input: torch.Tensor, y: torch.Tensor
                               ) -> Tuple[torch.Tensor, Optional[nn.Module]]:
        """``(shortcut, None)``; or, where the tail can take the downsample's last BatchNorm
        (:func:`~srm_zoo.layers.srm_fast.shortcut_norm_to_fold`), the shortcut before that norm and the norm."""
        shortcut_norm = shortcut_norm_to_fold(self.downsample, y)
        if shortcut_norm is None:
            return self._shortcut(block_input), None
        shortcut = block_input
        for module in list(self.downsample)[:-1]:
            shortcut = module(shortcut)
        return shortcut, shortcut_norm

    @torch.jit.unused
    def _fast_tail(self, x: torch.Tensor, shortcut: torch.Tensor, shortcut_norm: Optional[nn.Module] = None
                   ) -> torch.Tensor:
        """The fast tail from the last convolution's output: the block's last BatchNorm folded into SRM's
        pass where it folds (:func:`~srm_zoo.layers.srm_fast.norm_folds_into_srm`), else run as a module;
        ``shortcut`` passes ``shortcut_norm`` first where given."""
        norm = getattr(self, self.last_norm)
        if norm_folds_into_srm(norm, x):
            return self.se.forward_after_norm(norm, x, shortcut, shortcut_norm)
        if shortcut_norm is not None:
            shortcut = shortcut_norm(shortcut)
        return self._srm_tail(norm(x), shortcut)


class SRMBasicBlock(_SRMTail, BasicBlock):
    """timm's :class:`~timm.models.resnet.BasicBlock` ending in SRM's fused tail."""
    last_conv = 'conv2'
    last_norm = 'bn2'
    last_act = 'act2'

    def _last_conv(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(x)

    def _last_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block_input = x

        x = self.conv1(x)
        x = self.bn1(x)
        x = self.drop_block(x)
        x = self.act1(x)
        x = self.aa(x)
        return self._conv_tail(x, block_input)


class SRMBottleneck(_SRMTail, Bottleneck):
    """timm's :class:`~timm.models.resnet.Bottleneck` ending in SRM's fused tail."""
    last_conv = 'conv3'
    last_norm = 'bn3'
    last_act = 'act3'

    def _last_conv(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(x)

    def _last_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn3(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block_input = x

        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)

        x = self.conv2(x)
        x = self.bn2(x)
        x = self.drop_block(x)
        x = self.act2(x)
        x = self.aa(x)
        return self._conv_tail(x, block_input)
