"""Loading a user's checkpoint for evaluation: the shared strict loader, plus a class-count hint."""
from pathlib import Path
from typing import Any, Dict

import torch

from ..checkpoint import file_sha256, load_state_dict_for, read_checkpoint, read_state_dict
from ..errors import UserError

__all__ = ['file_sha256', 'read_state_dict', 'load_weights']


def load_weights(model: torch.nn.Module, path: Path, use_ema: bool = False) -> str:
    """Load the checkpoint at ``path`` into ``model`` exactly (every key, every shape) and return its SHA-256.

    A checkpoint that does not fit raises a UserError naming the first mismatching keys, and the
    class counts when the classifier is what differs. An ``srm-zoo train`` checkpoint's preprocessing (its
    data config) becomes the model's pretrained cfg, so that the model is measured as its run measured it.
    """
    checkpoint = read_checkpoint(path)
    state_dict = checkpoint.weights(use_ema)
    try:
        load_state_dict_for(model, state_dict, f'Checkpoint {str(path)!r}')
    except UserError as error:
        raise UserError(f'{error}{_class_count_hint(model, state_dict)}') from None
    if checkpoint.data_config:
        model.pretrained_cfg = _with_data_config(model.pretrained_cfg, checkpoint.data_config)
    return file_sha256(path)


def _with_data_config(pretrained_cfg: Dict[str, Any], data_config: Dict[str, Any]) -> Dict[str, Any]:
    """``pretrained_cfg`` preprocessing as ``data_config`` (timm's resolved data config) says; its test-time
    sizes, which timm's evaluation would prefer, dropped."""
    cfg = {k: v for k, v in pretrained_cfg.items() if k not in ('test_input_size', 'test_crop_pct')}
    return {**cfg, **{k: tuple(v) if isinstance(v, list) else v for k, v in data_config.items()}}


def _class_count_hint(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor]) -> str:
    classifier = getattr(model, 'pretrained_cfg', {}).get('classifier', 'fc')
    head = state_dict.get(f'{classifier}.weight')
    num_classes = getattr(model, 'num_classes', None)
    if head is None or head.ndim != 2 or num_classes is None or head.shape[0] == num_classes:
        return ''
    return (f' The checkpoint has {head.shape[0]} classes and the model {num_classes} '
            f'(class-count mismatch): pass --num-classes {head.shape[0]}.')
