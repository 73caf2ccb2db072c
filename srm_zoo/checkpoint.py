"""Reading checkpoints as people have them and loading them strictly into a model.

Accepted layouts: a plain state dict, or one inside a dict under ``state_dict``, ``model``
(or ``state_dict_ema`` / ``model_ema`` / ``ema``, the last ``srm-zoo train``'s, with ``use_ema``),
with or without the ``module.`` / ``_orig_mod.`` prefixes of DDP and ``torch.compile``; as a
``torch.save`` file (read with ``weights_only=True``) or a safetensors file. Checkpoints whose keys or shapes do
not fit the model are refused with the first mismatches named.
"""
import hashlib
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from safetensors.torch import load_file
from timm.models import clean_state_dict

from .errors import UserError, error_reason

__all__ = ['file_sha256', 'load_weights_only', 'CheckpointWeights', 'read_checkpoint', 'read_checkpoint_file',
           'read_state_dict', 'state_dict_mismatches', 'check_state_dict', 'load_state_dict_for', 'load_checkpoint_for']

MAX_LISTED = 5
"""How many mismatching keys of each kind an error message names."""

_UNSAFE_GLOBAL = re.compile(r'\bGLOBAL ([A-Za-z_][\w.]*)')
"""The class or function that torch's weights-only unpickler refused, in its message ("Unsupported global: GLOBAL
argparse.Namespace was not an allowed global", "unsupported GLOBAL os.system whose module os is blocked")."""

_UNPICKLER_REASON = re.compile(r'WeightsUnpickler error:\s*(\S[^\n]*)')
"""Why torch's weights-only unpickler stopped, in its message (after a paragraph about ``weights_only``)."""

_OPTIONAL_KEYS = ('num_batches_tracked',)
"""Buffers that old checkpoints may lack without changing what the model computes."""


def file_sha256(path: Union[str, Path]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open('rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


MODEL_KEYS = ('state_dict', 'model')
EMA_KEYS = ('state_dict_ema', 'model_ema', 'ema')
"""Where checkpoints keep their weights and their EMA weights (``ema``: ``srm-zoo train``'s checkpoints)."""


@dataclass(frozen=True)
class CheckpointWeights:
    """The weights a checkpoint file holds: plain and EMA state dicts (cleaned of DDP/compile prefixes), and
    the ``srm-zoo train`` settings of a training checkpoint, the epochs it had completed, the preprocessing
    its evaluations used (timm's data config: input size, interpolation, mean, std, crop), its class names
    (the class folders it trained on, in the order of the model's outputs) and the software versions that
    trained it (those of its last save)."""
    path: Path
    model: Optional[Dict[str, torch.Tensor]]
    ema: Optional[Dict[str, torch.Tensor]] = None
    train_config: Optional[Dict[str, Any]] = None
    epochs_trained: Optional[int] = None
    data_config: Optional[Dict[str, Any]] = None
    class_names: Optional[List[str]] = None
    versions: Optional[Dict[str, Any]] = None

    @property
    def recorded_attention(self) -> Optional[str]:
        """The ``--attention`` a training checkpoint's run recorded (``srm``, ``se``, ``none``); None for weights
        files, which record none."""
        return (self.train_config or {}).get('attention')

    def weights(self, use_ema: bool = False) -> Dict[str, torch.Tensor]:
        """The EMA weights with ``use_ema``, the plain weights otherwise; a :class:`UserError` when absent."""
        if use_ema and self.ema is None:
            raise UserError(f'Checkpoint {str(self.path)!r} has no EMA weights (no {", ".join(EMA_KEYS)} entry); '
                            'leave out --use-ema to load its plain weights.')
        weights = self.ema if use_ema else self.model
        if weights is None:
            raise UserError(f'Checkpoint {str(self.path)!r} is not a state dict: expected tensors by parameter name, '
                            f'directly or under {", ".join(repr(k) for k in MODEL_KEYS + EMA_KEYS)}.')
        return weights


def _state_dict(value: Any) -> Optional[Dict[str, torch.Tensor]]:
    """``value`` cleaned of prefixes when it is a non-empty dict of tensors, else None."""
    if not isinstance(value, dict) or not value or not all(isinstance(v, torch.Tensor) for v in value.values()):
        return None
    return clean_state_dict(value)


def _first_state_dict(checkpoint: Dict[str, Any], keys) -> Optional[Dict[str, torch.Tensor]]:
    return next((sd for sd in (_state_dict(checkpoint.get(k)) for k in keys) if sd is not None), None)


def read_checkpoint(path: Union[str, Path]) -> CheckpointWeights:
    """The weights of a checkpoint file in any accepted layout (the one function every command reads them with)."""
    path = Path(path)
    checkpoint = read_checkpoint_file(path)
    if not isinstance(checkpoint, dict) or not any(isinstance(checkpoint.get(k), dict) for k in MODEL_KEYS + EMA_KEYS):
        return CheckpointWeights(path, _state_dict(checkpoint))
    config = checkpoint.get('config')
    train_config = config if 'epoch' in checkpoint and isinstance(config, dict) else None
    trained = train_config is not None
    data_config = checkpoint.get('data_config') if trained and isinstance(checkpoint.get('data_config'), dict) else None
    names = checkpoint.get('class_names')
    class_names = [str(n) for n in names] if trained and isinstance(names, (list, tuple)) and names else None
    versions = checkpoint.get('versions') if trained and isinstance(checkpoint.get('versions'), dict) else None
    return CheckpointWeights(path, _first_state_dict(checkpoint, MODEL_KEYS), _first_state_dict(checkpoint, EMA_KEYS),
                             train_config, checkpoint['epoch'] if trained else None, data_config, class_names,
                             versions)


def read_state_dict(path: Union[str, Path], use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (its EMA weights with ``use_ema``), unwrapped from training dicts and
    DDP/compile prefixes."""
    return read_checkpoint(path).weights(use_ema)


def read_checkpoint_file(path: Path) -> Any:
    """What a checkpoint file holds, read with ``weights_only=True`` (or as safetensors); clear errors for missing,
    unsafe and unreadable files."""
    if not path.is_file():
        raise UserError(f'Checkpoint {str(path)!r} does not exist or is not a file.')
    return _read_file(path)


def _read_file(path: Path):
    if path.suffix == '.safetensors':
        try:
            return load_file(str(path), device='cpu')
        except Exception as error:  # safetensors raises its own error types for corrupt headers
            raise UserError(f'Checkpoint {str(path)!r} is not a readable safetensors file ({error}).') from None
    return load_weights_only(path)


def load_weights_only(path: Union[str, Path], what: str = 'checkpoint') -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU: the one way srm-zoo reads ``torch.save`` files.
    A file holding other Python objects than tensors, an empty file, or no PyTorch file at all, is a one-line
    UserError naming ``what`` it should have been."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise UserError(f'{what[0].upper()}{what[1:]} {str(path)!r} is empty (0 bytes), not a PyTorch checkpoint; '
                        'save or copy it again.')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        found = _UNSAFE_GLOBAL.search(str(error))
        if not found:
            raise _unreadable(path, what, error) from None
        raise UserError(
            f'{what[0].upper()}{what[1:]} {str(path)!r} holds Python objects other than tensors (such as '
            f'{found.group(1)}); srm-zoo loads only weights-only checkpoints (torch.load(weights_only=True)). Save '
            'its state dict instead: torch.save(model.state_dict(), path), or convert it to safetensors.') from None
    except Exception as error:  # torch.load raises many types (struct.error, RuntimeError, ...) for junk
        raise _unreadable(path, what, error) from None


def _unreadable(path: Union[str, Path], what: str, error: Exception) -> UserError:
    """The error for a ``torch.load`` failure other than a refused global: the file is corrupt or another format."""
    found = _UNPICKLER_REASON.search(str(error))
    reason = found.group(1).strip() if found else error_reason(error)
    return UserError(f'Cannot read {what} {str(path)!r}: it is not a readable PyTorch checkpoint (corrupt, or a file '
                     f'of another format; {type(error).__name__}: {reason}).')


def state_dict_mismatches(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> List[str]:
    """Descriptions of every missing key, unexpected key and shape mismatch of ``state_dict`` against
    the ``expected`` one (a model's ``state_dict()``); empty when it fits."""
    missing = [k for k in expected if k not in state_dict and not k.endswith(_OPTIONAL_KEYS)]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}'
              for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    problems = []
    for label, items in (('missing from the checkpoint', missing), ('not in the model', unexpected),
                         ('with another shape', shapes)):
        if items:
            more = f', ... ({len(items) - MAX_LISTED} more)' if len(items) > MAX_LISTED else ''
            problems.append(f'{len(items)} key(s) {label}: {", ".join(items[:MAX_LISTED])}{more}')
    return problems


def check_state_dict(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor], what: str,
                     hint: str = '') -> None:
    """Raise a :class:`UserError`, ``what`` (e.g. "X does not fit Y") and the first mismatches, followed by
    ``hint``, when ``state_dict`` does not fit ``expected``."""
    problems = state_dict_mismatches(expected, state_dict)
    if problems:
        raise UserError(f'{what}: ' + '; '.join(problems) + '.' + hint)


def load_state_dict_for(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str,
                        model_name: str = '') -> torch.nn.Module:
    """Load ``state_dict`` (from ``source``, for messages) into ``model`` strictly; refuse it, naming the
    first mismatches, if it does not fit."""
    name = model_name or getattr(model, 'pretrained_cfg', {}).get('architecture') or type(model).__name__
    check_state_dict(model.state_dict(), state_dict, f'{source} does not fit {name}',
                     hint=' Check the model name and its kwargs (num_classes, in_chans, ...).')
    model.load_state_dict(state_dict, strict=False)  # only optional buffers may be missing
    return model


def load_checkpoint_for(model: torch.nn.Module, path: Union[str, Path], use_ema: bool = False,
                        model_name: str = '') -> torch.nn.Module:
    """Read the checkpoint file ``path`` and load it into ``model`` as :func:`load_state_dict_for` does."""
    return load_state_dict_for(model, read_state_dict(path, use_ema=use_ema), f'Checkpoint {str(path)!r}', model_name)
