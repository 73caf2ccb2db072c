"""Loading a user's checkpoint for evaluation: the model its run built, the shared strict loader, and a
class-count hint."""
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import timm
import torch

from ..catalogue import attention_kwargs
from ..checkpoint import CheckpointWeights, file_sha256, load_state_dict_for, read_checkpoint, read_state_dict
from ..errors import UserError
from .labels import imagenet_synsets

__all__ = ['file_sha256', 'read_state_dict', 'checkpoint_model']


def checkpoint_model(name: str, path: Path, num_classes: Optional[int] = None, use_ema: bool = False
                     ) -> Tuple[torch.nn.Module, CheckpointWeights]:
    """``name`` holding the weights of the checkpoint at ``path`` exactly (every key, every shape), and what the
    checkpoint holds.

    An ``srm-zoo train`` checkpoint builds the model as its run did: with the block attention it recorded
    (``--attention se|none``) and, without ``num_classes``, one output for each of its class names. Its
    preprocessing (its data config) and its class names (as the model's label names) become the model's
    pretrained cfg, so that the model is measured as its run measured it. A checkpoint that does not fit
    raises a UserError naming the first mismatching keys, and the class counts when the classifier is what
    differs.
    """
    checkpoint = read_checkpoint(path)
    model = timm.create_model(name, pretrained=False, **_model_kwargs(checkpoint, name, num_classes))
    state_dict = checkpoint.weights(use_ema)
    try:
        load_state_dict_for(model, state_dict, f'Checkpoint {str(path)!r}')
    except UserError as error:
        raise UserError(f'{error}{_class_count_hint(model, state_dict)}') from None
    cfg = model.pretrained_cfg
    if checkpoint.data_config:
        cfg = _with_data_config(cfg, checkpoint.data_config)
    if _names_its_classes(checkpoint, model):
        cfg = {**cfg, 'label_names': tuple(checkpoint.class_names)}
    model.pretrained_cfg = cfg
    return model, checkpoint


def _model_kwargs(checkpoint: CheckpointWeights, name: str, num_classes: Optional[int]) -> Dict[str, Any]:
    """The kwargs that build ``name`` as the run of a training ``checkpoint`` built it."""
    kwargs = attention_kwargs(name, checkpoint.recorded_attention or 'srm')
    num_classes = num_classes or (len(checkpoint.class_names) if checkpoint.class_names else None)
    return {**kwargs, 'num_classes': num_classes} if num_classes else kwargs


def _names_its_classes(checkpoint: CheckpointWeights, model: torch.nn.Module) -> bool:
    """Whether the checkpoint's class names name the model's outputs (one each), other than ImageNet-1k's
    synsets in their standard order (an ImageNet model keeps ImageNet's label spaces)."""
    names = checkpoint.class_names
    if not names or len(names) != model.num_classes:
        return False
    return len(names) != 1000 or tuple(names) != imagenet_synsets()


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
