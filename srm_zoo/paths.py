"""The files and folders a command will write: their format, and checks made before any work is done."""
import os
from pathlib import Path
from typing import Optional, Union

from .errors import UserError

__all__ = ['file_format', 'check_results_format', 'check_writable_file', 'check_output_file', 'check_output_dir']

SUFFIX_FORMATS = {'.csv': 'csv', '.json': 'json'}
"""The format a results file's suffix asks for."""


def file_format(path: Optional[str], fmt: Optional[str], default: str) -> str:
    """``fmt`` when given, else the format of ``path``'s suffix (``.csv``, ``.json``), else ``default``."""
    if fmt:
        return fmt
    return SUFFIX_FORMATS.get(Path(path).suffix.lower(), default) if path else default


def check_results_format(results_file: Optional[str], results_format: Optional[str]) -> None:
    """Refuse a ``--results-format`` without a ``--results-file``, which it would leave unused."""
    if results_format and results_file is None:
        raise UserError('--results-format says how --results-file is written: give --results-file too.')


def check_writable_file(path: str, example: str, what: str = '') -> Path:
    """Refuse a file that cannot be written: a folder (``example`` names a file to write in it), a path in a
    missing folder (a link is followed to where it leads), a path under a file, or one without write permission;
    ``what`` (e.g. ``'results to '``) says what is written. For files written whole after the work, checked
    before it, so that none is lost."""
    if not str(path):
        raise UserError(f'Cannot write {what}an empty path: name a file, e.g. {example}.')
    target = Path(path)
    resolved = target.resolve()  # where a link leads: that file is written
    if resolved.is_dir():
        raise UserError(f'Cannot write {what}{path}: it is a folder; name a file in it, e.g. {target / example}.')
    blocker = _blocking_file(resolved)
    if blocker is not None:
        raise UserError(f'Cannot write {what}{path}: {blocker} is a file, not a folder.')
    if not resolved.parent.is_dir():
        folder = f'it links to {resolved}, whose folder' if target.is_symlink() else f'folder {target.parent}'
        raise UserError(f'Cannot write {what}{path}: {folder} does not exist.')
    if not os.access(resolved if resolved.exists() else resolved.parent, os.W_OK):
        raise UserError(f'Cannot write {what}{path}: permission denied.')
    return target


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
    """Refuse an output folder path that names a file, lies under a file, or cannot be written (the folder, or
    the nearest folder above it that exists, without write permission); returns it as a Path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f'{flag} {str(path)!r} is a file; name a folder to write into.')
    blocker = _blocking_file(path)
    if blocker is not None:
        raise UserError(f'{flag} {str(path)!r} cannot be created: {str(blocker)!r} is a file, not a folder.')
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f'{flag} {str(path)!r} cannot be written: permission denied on {str(existing)!r}.')
    return path
