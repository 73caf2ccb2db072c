"""The settings of one training run (the ``srm-zoo train`` options)."""
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, List, Optional

from ..distributed import uses_cuda

__all__ = ['TrainConfig']


RUN_ONLY_FIELDS = ('resume', 'workers', 'output', 'initial_checkpoint')
"""Settings that may change when a run is resumed; every other one must match the checkpoint (the
initial weights are in the checkpoint, so their file may have moved)."""

PATH_FIELDS = ('data', 'output', 'initial_checkpoint')
"""Settings that name files or folders: compared and recorded as absolute paths."""


def _meaning(name: str, value: Any) -> Any:
    """A setting as it acts: paths absolute and normalised, the device type (the one the run picks for None;
    a named one as named, which the run refuses where it cannot be used)."""
    if name in PATH_FIELDS and value is not None:
        return os.path.abspath(value)
    if name == 'device':
        if value is None:
            return 'cuda' if uses_cuda() else 'cpu'
        return 'cpu' if value.startswith('cpu') else 'cuda'
    return value


@dataclass(frozen=True)
class TrainConfig:
    """One training run; ``None`` takes the recipe's value."""
    model: str
    data: str
    recipe: str
    output: str
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    """Images per process per step (default: the recipe's global batch over processes and accumulation)."""
    lr: Optional[float] = None
    grad_accum: int = 1
    seed: int = 0
    attention: str = 'srm'
    img_size: Optional[int] = None
    train_split: str = 'train'
    val_split: str = 'validation'
    workers: int = 4
    amp: str = 'none'
    channels_last: bool = False
    compile: bool = False
    compile_mode: Optional[str] = None
    """``torch.compile``'s mode; with ``reduce-overhead`` or ``max-autotune`` each step replays CUDA graphs."""
    sync_bn: bool = False
    initial_checkpoint: Optional[str] = None
    device: Optional[str] = None
    resume: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def command(self, data: Optional[str] = None) -> str:
        """The ``srm-zoo train`` command line of this run (``data`` replaces the data path)."""
        words = ['srm-zoo', 'train', '--model', self.model, '--data', data or self.data, '--recipe', self.recipe]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ('model', 'data', 'recipe', 'output', 'resume') or value == f.default:
                continue
            flag = '--' + f.name.replace('_', '-')
            words += [flag] if value is True else [flag, str(value)]
        return ' '.join(words)

    def resolved(self) -> 'TrainConfig':
        """These settings as they act (absolute paths, the device picked), as checkpoints record them."""
        return replace(self, **{f.name: _meaning(f.name, getattr(self, f.name)) for f in fields(self)})

    def differences(self, recorded: Dict[str, Any]) -> List[str]:
        """Settings (other than run-only ones) that act differently from a checkpoint's recorded config."""
        return [f'{f.name}={getattr(self, f.name)!r} (checkpoint: {recorded.get(f.name)!r})'
                for f in fields(self) if f.name not in RUN_ONLY_FIELDS
                and _meaning(f.name, recorded.get(f.name)) != _meaning(f.name, getattr(self, f.name))]
