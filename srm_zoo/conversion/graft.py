"""Function-preserving graft: an SRM network initialised from a pretrained plain ResNet.

Every SRM starts as a constant gate of exactly 0.5: its channel-wise weights are zero, so its
BatchNorm sees ``z = 0``; with running mean 0, running variance 1, weight 1 and bias 0 the gate is
``sigmoid(0) = 0.5`` in eval mode (and in training mode, where the batch statistics of ``z = 0``
are 0 too). To keep the network's function, the BatchNorm that feeds each SRM (``bn3`` of a
Bottleneck, ``bn2`` of a BasicBlock) gets twice the source's affine weight and bias: its output
is exactly twice the source's (a power of two scales floats exactly), and the gate halves it
back. The grafted network thus computes the source's function to float precision, and the
gates are free to move from there in a short fine-tune (the ``graft_finetune`` recipe).
"""
from pathlib import Path
from typing import Dict

import timm
import torch
import torch.nn as nn

from ..errors import UserError
from ..layers import SRM
from ..checkpoint import check_state_dict, read_state_dict

__all__ = ['GRAFT_GATE', 'load_source_state', 'graft_state', 'graft']

GRAFT_GATE = 0.5


def load_source_state(source: str) -> Dict[str, torch.Tensor]:
    """The plain ResNet's state dict from a checkpoint file or a timm model name (pretrained weights)."""
    if Path(source).exists():
        return read_state_dict(source)
    if not timm.is_model(source.split('.', 1)[0]):
        raise UserError(f'--from {source!r} is neither a checkpoint file nor a timm model name.')
    try:
        return timm.create_model(source, pretrained=True).state_dict()
    except Exception as error:  # no network, no cache, no weights for that name
        raise UserError(f'Cannot load the pretrained weights of timm model {source!r}: {error}') from None


def _srm_inputs(model: nn.Module) -> Dict[str, str]:
    """``{SRM module name: name of the BatchNorm that feeds it}`` for every residual block."""
    fed_by = {}
    for name, module in model.named_modules():
        if isinstance(module, SRM):
            block = name.rsplit('.', 1)[0]
            last_bn = 'bn3' if hasattr(model.get_submodule(block), 'bn3') else 'bn2'
            fed_by[name] = f'{block}.{last_bn}'
    return fed_by


def graft_state(model: nn.Module, source: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``model``'s state dict built from the plain ResNet state ``source`` (see the module docstring)."""
    target = model.state_dict()
    fed_by = _srm_inputs(model)
    srm_keys = {k for k in target if any(k.startswith(f'{srm}.') for srm in fed_by)}
    check_state_dict({k: v for k, v in target.items() if k not in srm_keys}, source,
                     'The source network (a plain ResNet of the same shape is needed) does not fit')
    # keys the check lets a source lack (num_batches_tracked) keep the model's value
    state = {k: (source[k] if k in source else v).clone() for k, v in target.items() if k not in srm_keys}
    for srm, bn in fed_by.items():
        for affine in ('weight', 'bias'):
            state[f'{bn}.{affine}'] = state[f'{bn}.{affine}'] * 2
        srm_bn = f'{srm}.bn'
        state[f'{srm}.cfc'] = torch.zeros_like(target[f'{srm}.cfc'])
        state[f'{srm_bn}.weight'] = torch.ones_like(target[f'{srm_bn}.weight'])
        state[f'{srm_bn}.bias'] = torch.zeros_like(target[f'{srm_bn}.bias'])  # sigmoid(0) = GRAFT_GATE
        state[f'{srm_bn}.running_mean'] = torch.zeros_like(target[f'{srm_bn}.running_mean'])
        state[f'{srm_bn}.running_var'] = torch.ones_like(target[f'{srm_bn}.running_var'])
        state[f'{srm_bn}.num_batches_tracked'] = torch.zeros_like(target[f'{srm_bn}.num_batches_tracked'])
    return state


def graft(source: str, model_name: str) -> nn.Module:
    """The SRM model ``model_name`` grafted from ``source`` (checkpoint file or timm model name), in eval mode."""
    state = load_source_state(source)
    num_classes = state['fc.weight'].shape[0] if 'fc.weight' in state else None
    model = timm.create_model(model_name, **({'num_classes': num_classes} if num_classes else {}))
    model.load_state_dict(graft_state(model, state))
    return model.eval()
