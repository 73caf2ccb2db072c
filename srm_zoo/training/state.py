"""Training checkpoints: atomic writes, ``weights_only`` reads, and the random number generator states."""
import os
import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from ..checkpoint import load_weights_only
from ..errors import UserError

__all__ = ['CHECKPOINT_NAME', 'rng_state', 'set_rng_state', 'save_checkpoint', 'load_checkpoint']

CHECKPOINT_NAME = 'checkpoint.pth'


def rng_state() -> Dict[str, Any]:
    """The states of Python's, NumPy's, torch's and CUDA's global generators (checkpoint-safe types)."""
    np_state = np.random.get_state(legacy=False)
    state = {
        'python': random.getstate(),
        'numpy': {'key': torch.from_numpy(np_state['state']['key'].astype(np.int64)),
                  'pos': int(np_state['state']['pos']), 'has_gauss': int(np_state['has_gauss']),
                  'gauss': float(np_state['gauss'])},
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    random.setstate(state['python'])
    np_state = state['numpy']
    np.random.set_state(('MT19937', np_state['key'].numpy().astype(np.uint32), np_state['pos'],
                         np_state['has_gauss'], np_state['gauss']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])


def save_checkpoint(checkpoint: Dict[str, Any], path: Path) -> None:
    """Write ``checkpoint`` atomically: a killed process leaves the previous file intact."""
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'wb') as handle:
        torch.save(checkpoint, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """A training checkpoint written by :func:`save_checkpoint` (read with ``weights_only=True``)."""
    checkpoint = load_weights_only(path, 'training checkpoint')
    if not isinstance(checkpoint, dict) or 'epoch' not in checkpoint or 'model' not in checkpoint:
        raise UserError(f'{path} is not an srm-zoo training checkpoint.')
    return checkpoint
