"""scikit-learn's handwritten digits as a PNG ImageFolder: the zoo's embedded training data.

scikit-learn's load_digits() gives 1797 real 8x8 scans (UCI optdigits, 16 grey levels) shipped inside
the scikit-learn wheel (pip install 'srm-zoo[demo]'), so this dataset is available offline. They are
written as

    <root>/train/<digit>/<index>.png   (1437 images)
    <root>/test/<digit>/<index>.png    (360 images)
    <root>/digits.json                 (the split and its statistics)

The split is fixed: scikit-learn's train_test_split with test_size=0.2, stratified by digit,
random_state=0. <index> is the sample's position in load_digits(). Each scan is scaled from 0..16
to 0..255, upscaled to 32x32 with bilinear interpolation (PIL) and stored as 3-channel RGB (equal
channels), so timm's loaders and the CIFAR ResNets read it unchanged.
"""
import json
import os
import shutil
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
from PIL import Image

from ..errors import UserError
from ..paths import check_output_dir

__all__ = ['DIGITS_SPLIT_SEED', 'DIGITS_TEST_FRACTION', 'DIGITS_IMAGE_SIZE', 'digits_split', 'write_digits']

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2
DIGITS_IMAGE_SIZE = 32
_MARKER = 'digits.json'
_SOURCE = 'sklearn.datasets.load_digits (UCI optdigits, 1797 8x8 scans)'


def digits_split() -> Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The fixed split: ``{'train'|'test': (sample indices, 8x8 images 0..16, labels)}``."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise UserError('The digits come with scikit-learn: pip install scikit-learn '
                        "(or install srm-zoo with its 'demo' extra).") from None

    digits = load_digits()
    indices = np.arange(len(digits.target))
    train, test = train_test_split(indices, test_size=DIGITS_TEST_FRACTION, stratify=digits.target,
                                   random_state=DIGITS_SPLIT_SEED)
    return {name: (idx, digits.images[idx], digits.target[idx])
            for name, idx in (('train', np.sort(train)), ('test', np.sort(test)))}


def _to_image(scan: np.ndarray) -> Image.Image:
    grey = Image.fromarray(np.rint(scan * (255.0 / 16.0)).astype(np.uint8), mode='L')
    return grey.resize((DIGITS_IMAGE_SIZE, DIGITS_IMAGE_SIZE), Image.BILINEAR).convert('RGB')


def _check_out(root: Path) -> None:
    """Refuse an ``--out`` that is a file, lies under a file, or is a non-empty folder not written here."""
    check_output_dir(root, '--out')
    if root.exists() and any(root.iterdir()) and not _written_here(root):
        raise UserError(f'{root} exists and is not empty, and it is not a digits folder written by srm-zoo '
                        f'(its {_MARKER}, and train/ and test/ holding the class folders 0 to 9 only). Choose a new '
                        'or empty folder.')


def _written_here(root: Path) -> bool:
    """Whether ``root`` is a digits folder this module wrote: its description, and splits of digit class folders
    only (the splits it replaces hold nothing else)."""
    try:
        description = json.loads((root / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(description, dict) or description.get('source') != _SOURCE:
        return False
    digits = {str(d) for d in range(10)}
    splits = [root / split for split in ('train', 'test') if (root / split).exists()]
    return all(split.is_dir() and all(entry.is_dir() and entry.name in digits for entry in split.iterdir())
               for split in splits)


def _write_images(root: Path) -> Dict[str, object]:
    """Write the images and digits.json into the new folder ``root``; return the description."""
    counts, train_pixels = {}, []
    for split, (indices, scans, labels) in digits_split().items():
        for index, scan, label in zip(indices, scans, labels):
            image = _to_image(scan)
            folder = root / split / str(int(label))
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f'{int(index):04d}.png')
            if split == 'train':
                train_pixels.append(np.asarray(image, dtype=np.float64)[..., 0] / 255.0)
        counts[split] = int(len(indices))
    pixels = np.stack(train_pixels)
    mean, std = round(float(pixels.mean()), 4), round(float(pixels.std()), 4)
    description = dict(
        source=_SOURCE,
        split=dict(method='sklearn.model_selection.train_test_split', test_size=DIGITS_TEST_FRACTION,
                   stratify='label', random_state=DIGITS_SPLIT_SEED),
        image_size=DIGITS_IMAGE_SIZE, resize='PIL bilinear from 8x8, 0..16 scaled to 0..255, RGB',
        num_images=counts, mean=(mean,) * 3, std=(std,) * 3, label_names=[str(d) for d in range(10)],
    )
    (root / _MARKER).write_text(json.dumps(description, indent=2) + '\n')
    return description


def write_digits(root: str) -> Dict[str, object]:
    """Write the digits ImageFolder under ``root`` and return its description (also in digits.json).

    ``root`` must be empty, absent, or a folder written by this function, whose ``train``, ``test`` and
    digits.json are then rewritten with identical files while anything else in it stays (an evaluation's
    results, say); a non-empty folder not written here is refused so that no user data is mixed in. ``.`` and
    a link to a folder name that folder. The images are written whole into a temporary sibling and moved into
    place when complete, so an interrupted run leaves ``root`` as it was. The description holds the
    per-channel mean and std of the training images (0..1 scale).
    """
    root_path = Path(root).resolve()
    _check_out(root_path)
    root_path.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(root_path, 'incomplete')
    staging.mkdir()
    try:
        description = _write_images(staging)
        _move_into(staging, root_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return description


def _move_into(new: Path, target: Path) -> None:
    """Move the entries of the folder ``new`` into ``target`` (created where missing), each replacing the entry
    of its name there (removed afterwards); the other entries of ``target`` stay."""
    target.mkdir(exist_ok=True)
    for entry in sorted(new.iterdir()):
        destination = target / entry.name
        if not destination.exists():
            entry.rename(destination)
            continue
        old = _sibling(destination, 'old')
        destination.rename(old)
        entry.rename(destination)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def _sibling(path: Path, what: str) -> Path:
    """A hidden sibling of ``path`` for this process (any leftover of that name removed first)."""
    sibling = path.parent / f'.{path.name}.{what}-{os.getpid()}'
    shutil.rmtree(sibling, ignore_errors=True)
    return sibling
