"""The SRM authors' checkpoints into this zoo's models.

The authors train with ``nn.DataParallel`` and save ``{'epoch', 'state_dict', 'acc', 'best_acc',
'optimizer'}``; every key starts with ``module.``. Their ResNet uses torchvision's key layout,
which timm's ResNet shares, except the SRM inside each block: ``layerX.Y.rclb.cfc`` and
``layerX.Y.rclb.bn.*`` are this zoo's ``layerX.Y.se.cfc`` and ``layerX.Y.se.bn.*``.
"""
import re
from typing import Dict

import timm
import torch
from timm.models import clean_state_dict

from ..checkpoint import load_state_dict_for, read_state_dict

__all__ = ['official_to_zoo', 'convert_official']

_SRM_KEY = re.compile(r'^(layer\d+\.\d+)\.rclb\.')


def official_to_zoo(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The authors' state dict (with or without ``module.``) renamed to this zoo's keys."""
    return {_SRM_KEY.sub(r'\1.se.', key): value for key, value in clean_state_dict(state).items()}


def convert_official(checkpoint: str, model_name: str) -> torch.nn.Module:
    """The zoo model ``model_name`` holding the weights of the authors' ``checkpoint``.

    The number of classes follows the checkpoint's classifier. A checkpoint that does not fit
    raises a :class:`~srm_zoo.errors.UserError` naming the first mismatching keys.
    """
    state = official_to_zoo(read_state_dict(checkpoint))
    num_classes = state['fc.weight'].shape[0] if 'fc.weight' in state else None
    model = timm.create_model(model_name, **({'num_classes': num_classes} if num_classes else {}))
    return load_state_dict_for(model, state, str(checkpoint), model_name).eval()
