"""Writing state dicts as safetensors, atomically."""
import os
from pathlib import Path
from typing import Dict, Mapping, Optional

import torch
from safetensors.torch import save_file

__all__ = ['write_safetensors']


def write_safetensors(state: Mapping[str, torch.Tensor], path: str, metadata: Optional[Dict[str, str]] = None) -> None:
    """Write contiguous copies of ``state`` to ``path`` atomically (a temporary file, then a rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + '.tmp')
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, target)
