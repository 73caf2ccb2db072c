"""Loading a user's checkpoint for evaluation: the shared strict loader, plus a class-count hint."""
from pathlib import Path
from typing import Dict

import torch

from ..checkpoint import file_sha256, load_state_dict_for, read_state_dict
from ..errors import UserError

__all__ = ['file_sha256', 'read_state_dict', 'load_weights']


def load_weights(model: torch.nn.Module, path: Path, use_ema: bool = False) -> str:
    """Load the checkpoint at ``path`` into ``model`` exactly (every key, every shape) and return its SHA-256.

    A checkpoint that does not fit raises a UserError naming the first mismatching keys, and the
    class counts when the classifier is what differs.
    """
    state_dict = read_state_dict(path, use_ema)
    try:
        load_state_dict_for(model, state_dict, f'Checkpoint {str(path)!r}')
    except UserError as error:
        raise UserError(f'{error}{_class_count_hint(model, state_dict)}') from None
    return file_sha256(path)


def _class_count_hint(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor]) -> str:
    classifier = getattr(model, 'pretrained_cfg', {}).get('classifier', 'fc')
    head = state_dict.get(f'{classifier}.weight')
    num_classes = getattr(model, 'num_classes', None)
    if head is None or head.ndim != 2 or num_classes is None or head.shape[0] == num_classes:
        return ''
    return (f' The checkpoint has {head.shape[0]} classes and the model {num_classes} '
            f'(class-count mismatch): pass --num-classes {head.shape[0]}.')
