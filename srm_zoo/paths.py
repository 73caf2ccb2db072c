"""Checks of the files and folders a command will write, made before any work is done."""
from pathlib import Path
from typing import Union

from .errors import UserError

__all__ = ['check_output_file', 'check_output_dir']


def _blocking_file(path: Path) -> Union[Path, None]:
    """The first parent of ``path`` that exists but is not a folder (so ``path`` cannot be created)."""
    return next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)


def check_output_file(path: Union[str, Path], flag: str) -> Path:
    """Refuse an output file path that names a folder or lies under a file; returns it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f'{flag} {str(path)!r} is a folder; name the file to write, e.g. {path / "model.safetensors"}.')
    blocker = _blocking_file(path)
    if blocker is not None:
        raise UserError(f'{flag} {str(path)!r} cannot be written: {str(blocker)!r} is a file, not a folder.')
    return path


def check_output_dir(path: Union[str, Path], flag: str) -> Path:
    """Refuse an output folder path that names a file or lies under a file; returns it as a Path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f'{flag} {str(path)!r} is a file; name a folder to write into.')
    blocker = _blocking_file(path)
    if blocker is not None:
        raise UserError(f'{flag} {str(path)!r} cannot be created: {str(blocker)!r} is a file, not a folder.')
    return path
