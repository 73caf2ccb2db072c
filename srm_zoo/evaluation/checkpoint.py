"""Loading a user's checkpoint into a model, with a clear message when it does not fit."""
import hashlib
from pathlib import Path
from typing import Any, Dict, List

import torch
from timm.models import clean_state_dict

from ..errors import UserError

__all__ = ['file_sha256', 'read_state_dict', 'load_weights']

_STATE_DICT_KEYS = ('state_dict', 'model', 'state_dict_ema', 'model_ema')
_SHOWN_KEYS = 5


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with Path(path).open('rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: Path, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The model weights in a checkpoint file: safetensors, a plain state dict, or a training checkpoint
    with ``state_dict``/``model`` (``state_dict_ema``/``model_ema`` first with ``use_ema``), wrapper
    prefixes (``module.``, ``_orig_mod.``) removed. Pickles load with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f'Checkpoint {path} does not exist.')
    try:
        if path.suffix == '.safetensors':
            from safetensors.torch import load_file
            checkpoint: Any = load_file(str(path), device='cpu')
        else:
            checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to read is a bad file
        raise UserError(f'Cannot read checkpoint {path}: {str(error).splitlines()[0] if str(error) else error!r}. '
                        f'Expected a safetensors file or a torch.save()d state dict (loaded with '
                        f'weights_only=True).') from None
    if not isinstance(checkpoint, dict):
        raise UserError(f'Checkpoint {path} holds a {type(checkpoint).__name__}, not a state dict.')
    keys = _STATE_DICT_KEYS[2:] + _STATE_DICT_KEYS[:2] if use_ema else _STATE_DICT_KEYS
    for key in keys:
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise UserError(f'Checkpoint {path} holds no tensors (keys: {", ".join(list(checkpoint)[:_SHOWN_KEYS])}).')
    return clean_state_dict(tensors)


def _listing(keys: List[str]) -> str:
    return ', '.join(keys[:_SHOWN_KEYS]) + (f' (+{len(keys) - _SHOWN_KEYS} more)' if len(keys) > _SHOWN_KEYS else '')


def load_weights(model: torch.nn.Module, path: Path, use_ema: bool = False) -> str:
    """Load the checkpoint at ``path`` into ``model`` exactly (every key, every shape) and return its SHA-256.

    A checkpoint that does not fit raises a UserError naming the first missing, unexpected and
    mis-shaped keys (and the class counts, when the classifier is what differs).
    """
    state_dict = read_state_dict(path, use_ema)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}'
                  for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or mis_shaped:
        problems = []
        if missing:
            problems.append(f'{len(missing)} missing keys: {_listing(missing)}')
        if unexpected:
            problems.append(f'{len(unexpected)} unexpected keys: {_listing(unexpected)}')
        if mis_shaped:
            problems.append(f'{len(mis_shaped)} shape mismatches (checkpoint vs model): {_listing(mis_shaped)}')
        hint = ''
        classifier = getattr(model, 'default_cfg', {}).get('classifier', 'fc')
        head = state_dict.get(f'{classifier}.weight')
        if head is not None and head.ndim == 2 and head.shape[0] != getattr(model, 'num_classes', head.shape[0]):
            hint = (f' The checkpoint has {head.shape[0]} classes and the model {model.num_classes} '
                    f'(class-count mismatch): pass --num-classes {head.shape[0]}.')
        raise UserError(f'Checkpoint {path} does not fit {type(model).__name__}: {"; ".join(problems)}.{hint}')
    model.load_state_dict(state_dict)
    return file_sha256(path)
