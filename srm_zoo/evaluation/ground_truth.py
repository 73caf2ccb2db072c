"""Labels of the flat ILSVRC2012 validation folder (``ILSVRC2012_val_00000001.JPEG``, ...) and ReaL labels.

The devkit's ``ILSVRC2012_validation_ground_truth.txt`` holds ILSVRC2012 IDs, which are NOT the
standard class indices: ``meta.mat`` maps them to WordNet synsets. ``LOC_val_solution.csv``
(Kaggle) names the synset directly.
"""
import csv
import json
import pkgutil
import re
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import UserError, error_reason

__all__ = ['val_image_number', 'find_ground_truth', 'read_loc_solution', 'read_devkit_ground_truth',
           'read_devkit_meta', 'real_labels', 'real_labels_of']

_VAL_NAME = re.compile(r'ILSVRC2012_val_(\d{8})')
_DEVKIT_TRUTH = 'ILSVRC2012_validation_ground_truth.txt'
_DEVKIT_META = 'meta.mat'
_LOC_SOLUTION = 'LOC_val_solution.csv'
_DEVKIT_DIRS = ('', 'ILSVRC2012_devkit_t12/data', 'devkit/data', 'data')


def val_image_number(filename: str) -> Optional[int]:
    """The 1-based number of an ``ILSVRC2012_val_XXXXXXXX`` image (None for other names)."""
    match = _VAL_NAME.search(Path(filename).name)
    return int(match.group(1)) if match else None


def read_loc_solution(path: Path) -> Dict[int, str]:
    """Image number -> synset from a ``LOC_val_solution.csv`` (first synset of each box list)."""
    expected = f'{path} is not a LOC_val_solution.csv: expected ImageId,PredictionString rows like ' \
               '"ILSVRC2012_val_00000001,n01751748 ..."'
    try:
        with Path(path).open(newline='', encoding='utf-8-sig') as handle:
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError(f'{expected} as UTF-8 text ({error_reason(error)}).') from None
    truth = {}
    for row in rows:
        try:
            number = val_image_number(row['ImageId'])
            synset = row['PredictionString'].split()[0]
        except (KeyError, IndexError, AttributeError):
            raise UserError(f'{expected}.') from None
        if number is not None:
            truth[number] = synset
    return truth


def read_devkit_meta(path: Path) -> Dict[int, str]:
    """ILSVRC2012 ID -> synset (WNID) of the 1000 leaf classes in the devkit's ``meta.mat``."""
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError:
        raise UserError('Reading the devkit meta.mat needs scipy (`pip install scipy`); or pass '
                        '--labels LOC_val_solution.csv instead.') from None
    try:
        synsets = loadmat(str(path), squeeze_me=True)['synsets']
        ids, wnids, children = synsets['ILSVRC2012_ID'], synsets['WNID'], synsets['num_children']
        return {int(i): str(w) for i, w, c in zip(ids, wnids, children) if int(c) == 0}
    except (OSError, ValueError, KeyError, TypeError, IndexError, NotImplementedError, MatReadError) as error:
        # scipy raises any of these for other files (NotImplementedError: MATLAB 7.3); a non-struct "synsets" IndexError
        raise UserError(f'{path} is not an ILSVRC2012 devkit meta.mat (a "synsets" struct with ILSVRC2012_ID, '
                        f'WNID and num_children): {error_reason(error)}') from None


def read_devkit_ground_truth(path: Path, meta_path: Path) -> Dict[int, str]:
    """Image number -> synset from the devkit ground truth (line N: ILSVRC2012 ID of image N) and meta.mat."""
    id_to_synset = read_devkit_meta(meta_path)
    try:
        text = Path(path).read_text(encoding='utf-8-sig')
    except UnicodeDecodeError as error:
        raise UserError(f'{path} is not an ILSVRC2012 devkit ground truth ({_DEVKIT_TRUTH}: one ILSVRC2012 ID per '
                        f'line, as UTF-8 text): {error_reason(error)}. Pass that file or a {_LOC_SOLUTION} with '
                        '--labels.') from None
    truth = {}
    for number, line in enumerate(text.split(), start=1):
        try:
            truth[number] = id_to_synset[int(line)]
        except (ValueError, KeyError):
            raise UserError(f'{path} line {number}: {line!r} is not an ILSVRC2012 ID listed in {meta_path}.') from None
    return truth


def _find(roots: Sequence[Path], name: str) -> Optional[Path]:
    for root in roots:
        for sub in _DEVKIT_DIRS:
            candidate = root / sub / name
            if candidate.is_file():
                return candidate
    return None


def find_ground_truth(roots: Sequence[Path], labels_file: Optional[Path] = None,
                      meta_file: Optional[Path] = None) -> Tuple[Dict[int, str], str]:
    """Image number -> synset for a flat validation folder, and where it came from.

    ``labels_file`` is a ``LOC_val_solution.csv`` or a devkit ground-truth ``.txt`` (with ``meta_file``
    or a ``meta.mat`` found beside it); otherwise both are searched in ``roots`` (and their devkit
    ``data`` folders).
    """
    if meta_file is not None and not Path(meta_file).is_file():
        raise UserError(f'--meta {meta_file} does not exist or is not a file.')
    if labels_file is not None:
        labels_file = Path(labels_file)
        if not labels_file.is_file():
            raise UserError(f'Labels file {labels_file} does not exist.')
        if labels_file.suffix.lower() == '.csv':
            return _loc_ground_truth(labels_file, meta_file)
        meta_file = Path(meta_file) if meta_file else _find([labels_file.parent, *roots], _DEVKIT_META)
        if meta_file is None or not meta_file.is_file():
            raise UserError(f'{labels_file} holds ILSVRC2012 IDs, which need the devkit meta.mat to become synsets; '
                            f'pass --meta PATH/meta.mat.')
        return read_devkit_ground_truth(labels_file, meta_file), f'{labels_file} + {meta_file}'
    devkit_truth = _find(roots, _DEVKIT_TRUTH)
    if devkit_truth is not None:
        return find_ground_truth(roots, devkit_truth, meta_file)
    loc = _find(roots, _LOC_SOLUTION)
    if loc is not None:
        return _loc_ground_truth(loc, meta_file)
    raise UserError(
        f'The images in {roots[0]} are not in class folders, and no ground truth was found beside them: put '
        f'{_DEVKIT_TRUTH} with meta.mat (ILSVRC2012 devkit) or {_LOC_SOLUTION} next to the images or pass '
        f'--labels FILE (and --meta FILE), or sort the images into synset folders.')


def _loc_ground_truth(path: Path, meta_file: Optional[Path]) -> Tuple[Dict[int, str], str]:
    """The ground truth of the ``LOC_val_solution.csv`` ``path``, which names synsets itself: ``--meta``
    (``meta_file``) is refused rather than ignored."""
    if meta_file is not None:
        raise UserError(f'--meta {meta_file} maps the ILSVRC2012 IDs of {_DEVKIT_TRUTH} to synsets, but the labels '
                        f'come from {path}, which names the synsets itself; leave --meta out.')
    return read_loc_solution(path), str(path)


@lru_cache(maxsize=None)
def real_labels() -> Tuple[Tuple[int, ...], ...]:
    """ReaL labels (Beyer et al. 2020) shipped with timm: entry N-1 lists the correct classes of image N."""
    data = pkgutil.get_data('timm.data', '_info/imagenet_real_labels.json').decode('utf-8')
    return tuple(tuple(labels) for labels in json.loads(data))


def real_labels_of(filenames: Sequence[str]) -> List[Tuple[int, ...]]:
    """ReaL labels of each image (by its ``ILSVRC2012_val_`` number); empty tuples are unscored images."""
    table = real_labels()
    result, unnamed = [], []
    for filename in filenames:
        number = val_image_number(filename)
        if number is None or not 1 <= number <= len(table):
            unnamed.append(filename)
        else:
            result.append(table[number - 1])
    if unnamed:
        raise UserError(f'--dataset imagenet-real finds its labels by the ImageNet validation file name '
                        f'(ILSVRC2012_val_00000001.JPEG ... _00050000), but {len(unnamed)} images are named '
                        f'otherwise, e.g. {", ".join(unnamed[:3])}.')
    return result
