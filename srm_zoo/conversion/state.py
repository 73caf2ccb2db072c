"""Reading, checking and writing state dicts (safetensors out, ``weights_only`` loading in)."""
import os
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional

import torch
from safetensors.torch import load_file, save_file

from ..errors import UserError

__all__ = ['read_state_dict', 'strip_prefix', 'check_state_dict', 'write_safetensors']

_NESTED_KEYS = ('state_dict', 'model', 'state_dict_ema')
_SHOWN = 5


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or a torch checkpoint (``weights_only``).

    Torch checkpoints may hold the state dict itself or under ``state_dict`` / ``model``
    (the authors' and this zoo's training checkpoints).
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f'Checkpoint {path} does not exist or is not a file.')
    try:
        if file.suffix == '.safetensors':
            return load_file(str(file))
        checkpoint = torch.load(file, map_location='cpu', weights_only=True)
    except Exception as error:  # any unreadable file becomes one message
        raise UserError(f'Cannot read checkpoint {path}: {error}'.strip()) from None
    for key in _NESTED_KEYS:
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise UserError(f'Checkpoint {path} holds no state dict (a mapping of names to tensors, possibly '
                        f'under one of {", ".join(_NESTED_KEYS)}).')
    return dict(checkpoint)


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = 'module.') -> Dict[str, torch.Tensor]:
    """``state`` with ``prefix`` (DataParallel's ``module.``) removed wherever keys start with it."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def _first(names: Iterable[str]) -> str:
    names = list(names)
    more = f' (and {len(names) - _SHOWN} more)' if len(names) > _SHOWN else ''
    return ', '.join(names[:_SHOWN]) + more


def check_state_dict(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise a :class:`UserError` naming the first missing, unexpected and mis-shaped keys."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f'{k} {tuple(state[k].shape)} vs {tuple(v.shape)}' for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f'missing {len(missing)} key(s): {_first(missing)}')
    if unexpected:
        problems.append(f'unexpected {len(unexpected)} key(s): {_first(unexpected)}')
    if shapes:
        problems.append(f'{len(shapes)} shape mismatch(es) (checkpoint vs model): {_first(shapes)}')
    if problems:
        raise UserError(f'{what} does not fit: ' + '; '.join(problems) + '.')


def write_safetensors(state: Mapping[str, torch.Tensor], path: str, metadata: Optional[Dict[str, str]] = None) -> None:
    """Write contiguous copies of ``state`` to ``path`` atomically (a temporary file, then a rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + '.tmp')
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, target)
