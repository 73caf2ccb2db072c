"""SRM-ResNets for 32x32 inputs, as in the paper's CIFAR experiments (He et al. 2016 layout).

A 3x3 stem at 16 channels, three stages of ``n`` BasicBlocks at 16/32/64 channels with
strides 1/2/2 (depth ``6n + 2``), global average pooling and a linear classifier. Stage
transitions use the parameter-free shortcut of the CIFAR ResNets (option A: subsample and
zero-pad the channels), so SRM-ResNet-20 has the familiar ~0.27M parameters.
"""
from functools import partial
from typing import Any, List, Optional, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, create_classifier, get_device_dtype
from timm.models._features import feature_take_indices
from timm.models import build_model_with_cfg, checkpoint_seq
from timm.models.resnet import BasicBlock

from ..catalogue import CIFAR_RESNETS
from ..layers import SRM
from ._builder import default_cfgs_for, pretrained_kwargs, register_entrypoints
from .srm_blocks import SRMBasicBlock, fuses_srm
from .srm_resnet import srm_cfc_names

__all__ = ['CifarResNet', 'PadShortcut']

STAGE_WIDTHS = (16, 32, 64)


class PadShortcut(nn.Module):
    """Parameter-free shortcut: spatial subsampling by ``stride`` and zero channels appended."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet with SRM (or another attention layer) in every BasicBlock.

    Args:
        depth: ``6n + 2`` layers (20, 32, 44, 56, 110, ...).
        num_classes: classes of the linear head; 0 gives pooled features.
        in_chans: input channels.
        global_pool: timm pooling type.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linearly increasing over the blocks.
        srm_pooling: SRM style pooling (``'mean_std'``, ``'mean'``, ``'std'``).
        attn_layer: the block attention: ``'srm'`` (SRM, the default), another timm attention layer (e.g.
            ``'se'``), or ``''`` / None / ``nn.Identity`` for a plain net (timm's blocks build no attention
            for an empty name; ``timm.create_model`` drops None kwargs, so ``''`` is the one for config files).
        zero_init_last: zero the last BatchNorm of every block at initialisation.
    """

    def __init__(
            self,
            depth: int = 20,
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            srm_pooling: str = 'mean_std',
            attn_layer: Any = 'srm',
            zero_init_last: bool = True,
            device=None,
            dtype=None,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f'CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}')
        dd = dict(device=device, dtype=dtype)
        blocks_per_stage = (depth - 2) // 6
        if attn_layer == 'srm':
            attn_layer = partial(SRM, style_pooling=srm_pooling)
        block_cls = SRMBasicBlock if fuses_srm(attn_layer) else BasicBlock
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.conv1 = nn.Conv2d(in_chans, STAGE_WIDTHS[0], 3, padding=1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0], **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.feature_info = [dict(num_chs=STAGE_WIDTHS[0], reduction=1, module='act1')]

        total_blocks = 3 * blocks_per_stage
        block_idx = 0
        inplanes = STAGE_WIDTHS[0]
        for stage_idx, planes in enumerate(STAGE_WIDTHS):
            stride = 1 if stage_idx == 0 else 2
            blocks = []
            for i in range(blocks_per_stage):
                block_stride = stride if i == 0 else 1
                reshapes = block_stride != 1 or inplanes != planes
                downsample = PadShortcut(inplanes, planes, block_stride) if reshapes else None
                dpr = drop_path_rate * block_idx / max(total_blocks - 1, 1)
                blocks.append(block_cls(
                    inplanes, planes, stride=block_stride, downsample=downsample, attn_layer=attn_layer,
                    drop_path=DropPath(dpr) if dpr > 0. else None, **dd))
                inplanes = planes
                block_idx += 1
            self.add_module(f'layer{stage_idx + 1}', nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=planes, reduction=2 ** stage_idx, module=f'layer{stage_idx + 1}'))

        self.num_features = STAGE_WIDTHS[-1]
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.init_weights(zero_init_last=zero_init_last)

    @torch.jit.ignore
    def init_weights(self, zero_init_last: bool = True) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, 'zero_init_last'):
                    m.zero_init_last()

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """SRM channel-wise weights: trained without weight decay."""
        return srm_cfc_names(self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return dict(stem=r'^conv1|bn1', blocks=r'^layer(\d+)' if coarse else r'^layer(\d+)\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False):
        return 'fc' if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new head for ``num_classes`` (0: none) on the model's device and dtype, in its training mode;
        ``global_pool`` None keeps the current pooling."""
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features plus the stem and stage outputs selected by ``indices`` (0 = stem, 1-3 = stages)."""
        assert output_fmt == 'NCHW', 'Output shape must be NCHW.'
        take_indices, max_index = feature_take_indices(4, indices)
        intermediates = []
        x = self.act1(self.bn1(self.conv1(x)))
        if 0 in take_indices:
            intermediates.append(x)
        stages = [self.layer1, self.layer2, self.layer3]
        if stop_early:
            stages = stages[:max_index]
        for feat_idx, stage in enumerate(stages, start=1):
            x = checkpoint_seq(stage, x) if self.grad_checkpointing and not torch.jit.is_scripting() else stage(x)
            if feat_idx in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages after the last requested intermediate."""
        take_indices, max_index = feature_take_indices(4, indices)
        for name in ('layer1', 'layer2', 'layer3')[max_index:]:
            setattr(self, name, nn.Sequential())
        if max_index < 3:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or max_index < 3:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq([self.layer1, self.layer2, self.layer3], x)
        else:
            x = self.layer3(self.layer2(self.layer1(x)))
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create_srm_resnet_cifar(variant: str, pretrained: bool = False, **kwargs) -> CifarResNet:
    return build_model_with_cfg(
        CifarResNet, variant, pretrained, feature_cfg=dict(out_indices=(0, 1, 2, 3)),
        **pretrained_kwargs(variant, pretrained, kwargs))


default_cfgs = default_cfgs_for(CIFAR_RESNETS)
globals().update(register_entrypoints(CIFAR_RESNETS, __name__, _create_srm_resnet_cifar))
