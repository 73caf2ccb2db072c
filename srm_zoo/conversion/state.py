"""Writing weights as safetensors: atomically, next to the target, with the permissions of any new file."""
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch
from safetensors.torch import save_file
from timm.models import save_for_hf

from ..paths import check_output_file

__all__ = ['write_safetensors', 'save_hf_folder', 'give_default_permissions']


def give_default_permissions(path: Path) -> None:
    """Give ``path`` the mode a newly created file gets under the umask (safetensors writes its files 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_safetensors(state: Mapping[str, torch.Tensor], path: str, metadata: Optional[Dict[str, str]] = None) -> None:
    """Write contiguous copies of ``state`` to ``path`` atomically: a temporary file next to it (removed on any
    failure), then a rename."""
    target = check_output_file(path, 'Output file')
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f'.{target.name}.tmp')
    try:
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
        give_default_permissions(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def save_hf_folder(model: torch.nn.Module, folder: str, **kwargs: Any) -> None:
    """timm's ``save_for_hf(model, folder, safe_serialization=True, **kwargs)``, its model.safetensors readable
    as the config.json beside it."""
    save_for_hf(model, str(folder), safe_serialization=True, **kwargs)
    give_default_permissions(Path(folder) / 'model.safetensors')
