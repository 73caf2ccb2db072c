"""The files and folders a command will write: their format, and checks made before any work is done."""
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

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


def check_writable_file(path: str, example: str, what: str = '', text: bool = False,
                        inputs: Sequence[Union[str, Path]] = ()) -> Path:
    """Refuse a file that cannot be written: a folder (``example`` names a file to write in it), a path in a
    missing folder (a link is followed to where it leads), a path under a file, or one without write permission;
    ``what`` (e.g. ``'results to '``) says what is written. Nothing is lost: a ``text`` output (results) does not
    replace a file of binary data (weights, images), and no output replaces one of the command's ``inputs``.
    For files written whole after the work, checked before it."""
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
    _check_not_an_input(target, inputs, f'Cannot write {what}{path}')
    if text and resolved.is_file() and _holds_binary_data(resolved):
        raise UserError(f'Cannot write {what}{path}: the file exists and holds binary data (not a results file), '
                        'which writing would destroy; choose another file.')
    return target


def _check_not_an_input(target: Path, inputs: Sequence[Union[str, Path]], failure: str) -> None:
    """Refuse writing ``target`` where it is (or links to) one of ``inputs``, which writing would destroy."""
    for source in inputs:
        try:
            same = target.exists() and os.path.samefile(target, source)
        except OSError:  # an input that is no file (a timm model name) or cannot be read
            same = False
        if same:
            raise UserError(f'{failure}: it is {source}, which the command reads; choose another file.')


def _holds_binary_data(path: Path) -> bool:
    """Whether the file ``path`` begins with bytes no text file holds: a NUL byte, or bytes that are not UTF-8."""
    with path.open('rb') as handle:
        head = handle.read(8192)
    if b'\0' in head:
        return True
    try:
        head.decode('utf-8')
    except UnicodeDecodeError as error:
        return error.start < len(head) - 3  # else a character cut by the read
    return False


def _blocking_file(path: Path) -> Union[Path, None]:
    """The first parent of ``path`` that exists but is not a folder (so ``path`` cannot be created)."""
    return next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)


def check_output_file(path: Union[str, Path], flag: str, inputs: Sequence[Union[str, Path]] = (),
                      suffix: Optional[str] = None) -> Path:
    """Refuse an output file path that is empty, names a folder, lies under a file, cannot be written (no write
    permission on the nearest folder above it that exists, where it is created), is one of the command's
    ``inputs``, or (given ``suffix``) ends otherwise, so that readers would take it for another format; returns it
    as a Path."""
    if not str(path):
        raise UserError(f'{flag} is empty: name the file to write, e.g. model.safetensors.')
    path = Path(path)
    if path.is_dir():
        raise UserError(f'{flag} {str(path)!r} is a folder; name the file to write, e.g. {path / "model.safetensors"}.')
    blocker = _blocking_file(path)
    if blocker is not None:
        raise UserError(f'{flag} {str(path)!r} cannot be written: {str(blocker)!r} is a file, not a folder.')
    _check_folder_permission(path, flag, path.absolute().parents)  # where the file is created (and renamed)
    if suffix and path.suffix != suffix:
        raise UserError(f'{flag} {str(path)!r} does not end in {suffix}, the format written (readers tell it by the '
                        f'suffix): name it, e.g., {path.with_suffix(suffix).name}.')
    _check_not_an_input(path, inputs, f'{flag} {str(path)!r} cannot be written')
    return path


def check_output_dir(path: Union[str, Path], flag: str) -> Path:
    """Refuse an output folder path that names a file, lies under a file, or cannot be written (the folder, or
    the nearest folder above it that exists, without write permission), or is empty; returns it as a Path."""
    if not str(path):
        raise UserError(f'{flag} is empty: name the folder to write into (. for the current one).')
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f'{flag} {str(path)!r} is a file; name a folder to write into.')
    blocker = _blocking_file(path)
    if blocker is not None:
        raise UserError(f'{flag} {str(path)!r} cannot be created: {str(blocker)!r} is a file, not a folder.')
    _check_folder_permission(path, flag, (path, *path.absolute().parents))
    return path


def _check_folder_permission(path: Path, flag: str, folders: Iterable[Path]) -> None:
    """Refuse writing ``path`` where the first of ``folders`` that exists (the folder it is written into, else the
    nearest above, where it would be created) may not be written."""
    existing = next(p for p in folders if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f'{flag} {str(path)!r} cannot be written: permission denied on {str(existing)!r}.')
