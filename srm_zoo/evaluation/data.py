"""Find evaluation images in the layouts users have and give every image its target.

Layouts: class folders (``<data>/<split>/<class>/*`` or ``<data>/<class>/*``), the flat ILSVRC2012
validation folder with devkit or ``LOC_val_solution.csv`` ground truth, ``.tar`` archives and folders of
``.tar`` shards (timm's readers), and Hugging Face datasets (``hfds/<name>``, needs ``datasets``).
"""
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from timm.data.readers import create_reader
from timm.data.readers.img_extensions import get_img_extensions
from timm.data.readers.reader_image_in_tar import ReaderImageInTar
from timm.utils.misc import natural_key
from torch.utils.data import Dataset

from ..errors import UserError
from .ground_truth import find_ground_truth, real_labels_of, val_image_number
from .labels import LabelSpace, synset_to_index

__all__ = ['SPLIT_SYNONYMS', 'canonical_split', 'resolve_split', 'to_rgb', 'EvalImages', 'EvalImageDataset',
           'load_images', 'collate_skipping_bad']

SPLIT_SYNONYMS = {
    'validation': ('val', 'validation', 'valid', 'eval', 'evaluation'),
    'test': ('test', 'testing'),
    'train': ('train', 'training'),
}
_SPLIT_NAMES = {name for synonyms in SPLIT_SYNONYMS.values() for name in synonyms}
HF_PREFIX = 'hfds/'
_FLAT_KINDS = ('imagenet', 'imagenet-real')


def canonical_split(split: str) -> str:
    """``val``, ``valid``, ``eval`` ... -> ``validation``; ``testing`` -> ``test``; others unchanged."""
    return next((name for name, synonyms in SPLIT_SYNONYMS.items() if split.lower() in synonyms), split)


def _named_split(path: Path) -> Optional[str]:
    """The canonical split that ``path`` is named after (``val``, ``test.tar``, ...), or None."""
    name = path.name.removesuffix('.tar').lower()
    return canonical_split(name) if name in _SPLIT_NAMES else None


def resolve_split(root: Path, split: Optional[str]) -> Tuple[Path, str, bool]:
    """The folder (or ``.tar``) holding ``split`` under ``root``, the split's canonical name, and whether a name
    (``split``'s or a folder's) gave it.

    Without ``split`` the validation folders are tried, then ``test``. When ``root`` has no split folder it is
    the split itself: the one its own name is (``digits/train`` is ``train``; a ``split`` naming another one is
    refused), else ``split``, else ``validation`` by default. A ``root`` that holds other splits only
    (``train``, ...) is refused: reading it would mix them in.
    """
    if root.is_dir():
        if split:
            names = (split, *SPLIT_SYNONYMS.get(canonical_split(split), ()))
        else:
            names = (*SPLIT_SYNONYMS['validation'], *SPLIT_SYNONYMS['test'])
        for name in names:
            for candidate in (root / name, root / f'{name}.tar'):
                if candidate.exists():
                    return candidate, canonical_split(name), True
        other_splits = sorted(p.name for p in root.iterdir() if _named_split(p))
        if other_splits:  # root holds other splits, not the one asked for: reading it would mix them in
            raise UserError(f'{root} has no {split or "validation or test"} split folder, only '
                            f'{", ".join(other_splits)}; pass --split with the one to evaluate.')
    own = _named_split(root)
    if own and split and canonical_split(split) != own:
        raise UserError(f'--data {root} is the {own} split (by its name), not {split}: leave --split out, or give '
                        f'--data the {split} split.')
    if own or split:
        return root, own or canonical_split(split), True
    return root, 'validation', False


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB. 16-bit greys (``I;16``, ``I;16B``, ``I;16L``, and ``I`` taken as 16-bit,
    clipped to 0..65535) are scaled to 8 bits (value / 257, rounded): PIL's ``convert`` would clip them."""
    if image.mode == 'I' or image.mode.startswith('I;16'):
        values = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
        image = Image.fromarray(np.rint(values / 257.0).astype(np.uint8))
    return image.convert('RGB')  # convert() decodes every pixel


@dataclass
class EvalImages:
    """The images of one evaluation: a timm reader, one target per image and where they came from.

    ``filenames`` are the images' paths relative to ``--data`` (inside the archive for ``.tar`` data);
    Hugging Face datasets list them only for ReaL labels (:meth:`name` asks the reader otherwise).
    ``split_named`` says whether ``--split`` or a folder's name gave ``split`` (else it is the default).
    """
    reader: Any
    targets: List[int]
    filenames: List[str]
    path: str
    split: str
    split_named: bool
    layout: str
    label_source: str
    real_labels: Optional[List[Tuple[int, ...]]] = None

    def __len__(self) -> int:
        return len(self.targets)

    def name(self, index: int) -> str:
        """The path of image ``index`` for messages and results."""
        return self.filenames[index] if self.filenames else str(self.reader.filename(index))


class EvalImageDataset(Dataset):
    """(image tensor or None when unreadable, target, index) for each image of :class:`EvalImages`.

    Unreadable or corrupt images are not replaced by a neighbour (which would count an image twice):
    they come back as None, and the loader's collate function drops and counts them.
    """

    def __init__(self, images: EvalImages, transform: Callable[[Image.Image], torch.Tensor]):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        target = self.images.targets[index]
        try:
            item = self.images.reader[index]
            fileobj = item[0]
            try:
                image = to_rgb(Image.open(fileobj))
            finally:
                if hasattr(fileobj, 'close'):
                    fileobj.close()
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
            return None, target, index
        return self.transform(image), target, index


def collate_skipping_bad(batch: Sequence[Tuple[Optional[torch.Tensor], int, int]]):
    """Stack the readable images; also return the indices of the unreadable ones."""
    good = [sample for sample in batch if sample[0] is not None]
    bad = torch.tensor([index for image, _, index in batch if image is None], dtype=torch.long)
    if not good:
        return None, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), bad
    images = torch.stack([image for image, _, _ in good])
    targets = torch.tensor([target for _, target, _ in good], dtype=torch.long)
    indices = torch.tensor([index for _, _, index in good], dtype=torch.long)
    return images, targets, indices, bad


def _is_tar_shard_folder(path: Path) -> bool:
    entries = list(path.iterdir())
    return any(e.suffix == '.tar' and e.is_file() for e in entries) and not any(e.is_dir() for e in entries)


def _open_reader(path: Path):
    """timm's reader for a folder, a ``.tar`` or a folder of ``.tar`` shards; a UserError when it finds nothing."""
    extensions = ', '.join(get_img_extensions())
    try:
        if (path.is_file() and path.suffix.lower() == '.tar') or (path.is_dir() and _is_tar_shard_folder(path)):
            return ReaderImageInTar(str(path)), 'tar'
        if path.is_file():
            raise UserError(f'--data {path} is a file; give a folder of images, a .tar archive or a folder of .tar '
                            f'shards.')
        return create_reader('', root=str(path)), 'folder'
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - timm's readers report bad data with assorted exceptions
        if 'Found 0 images' in str(error) or 'not enough values to unpack' in str(error):
            raise UserError(f'No images found in {path} (looked for {extensions} files in it and its '
                            f'sub-folders).') from None
        raise UserError(f'Cannot read the images in {path}: {error}') from None


def _class_names(reader) -> dict:
    mapping = getattr(reader, 'class_to_idx', None)
    if mapping is None:
        mapping = getattr(reader, 'class_name_to_idx')
    return mapping


def _local_targets(reader) -> List[int]:
    if hasattr(reader, 'targets'):
        return [int(t) for t in reader.targets]
    return [int(target) for _, target in reader.samples]


def _class_folders(path: Path, names: dict) -> List[str]:
    """Every class folder of ``path`` (non-hidden sub-folders, empty ones included, and those timm found
    images in), in timm's natural sort order."""
    folders = set(names)
    if path.is_dir():
        folders.update(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith('.'))
    return sorted(folders, key=natural_key)


def _tar_folders(member: tarfile.TarInfo, shard: Optional[str], inner: Optional[tarfile.TarInfo]) -> Tuple[str, ...]:
    """The folders timm's tar reader labels ``member`` by (the innermost): the names of its shard and of the
    ``.tar`` inside the archive that hold it, then its folders."""
    return Path(Path(shard).stem if shard else '', Path(inner.name).stem if inner is not None else '',
                os.path.dirname(member.path)).parts


def _image_folders(reader, path: Path, layout: str) -> List[Tuple[str, ...]]:
    """The folders below ``path`` (inside the archive for ``.tar`` data) that each image sits in."""
    if layout == 'folder':
        return [Path(os.path.relpath(file, path)).parent.parts for file, _ in reader.samples]
    return [_tar_folders(*sample) for sample in reader.samples]


def _refuse_nested_images(folders: Sequence[Tuple[str, ...]], filenames: Sequence[str], layout: str) -> None:
    """Refuse images that timm's readers would label by another folder than their class folder: they label each
    image by its innermost folder (``folders``, from :func:`_image_folders`). In a folder, images must sit
    directly in their class folder. In tar data, whose class folders may sit in a shared top folder or in
    shards, an image may not sit in a folder inside another folder that holds images."""
    holding = set(folders)
    for parts, filename in zip(folders, filenames):
        if layout == 'folder':
            outer = parts[:1] if len(parts) > 1 else None
        else:
            outer = next((parts[:depth] for depth in range(len(parts) - 1, 0, -1) if parts[:depth] in holding), None)
        if outer:
            raise UserError(f'{filename} is in a folder inside the class folder {outer[-1]!r}; images must sit '
                            f'directly in their class folder (<class>/<image>), else they are labelled by their '
                            f'innermost folder ({parts[-1]!r}). Move them up into their class folder.')


def _folder_targets(local_targets: List[int], names: dict, space: LabelSpace, folders: Sequence[str]) -> List[int]:
    """Targets from class-folder names through the label space. When it names no classes, folders named
    ``0``, ``1``, ... are class indices, and other names are taken in the sorted order of ``folders`` (every
    class folder, empty ones included, so that they keep their place)."""
    if space.class_to_index is None:
        if all(name.isdigit() and int(name) < space.model_classes for name in names):
            mapping = {name: int(name) for name in names}  # folders named by class index
        elif len(folders) > space.model_classes:
            raise UserError(f'The data has {len(folders)} class folders but the model has {space.model_classes} '
                            f'outputs (class-count mismatch).')
        else:
            mapping = {name: index for index, name in enumerate(folders)}
    else:
        unknown = sorted(name for name in names if name not in space.class_to_index)
        if unknown:
            more = f' and {len(unknown) - 5} more' if len(unknown) > 5 else ''
            shown = ', '.join(repr(n) for n in unknown[:5]) + more
            hint = (' Use --dataset folder for data in the model\'s own classes.' if space.is_imagenet
                    else ' Rename the class folders to the model\'s label names.')
            raise UserError(f'{len(unknown)} of the {len(names)} class folders are not {space.expected_names}: '
                            f'{shown}.{hint}')
        mapping = space.class_to_index
    local_to_index = {local: mapping[name] for name, local in names.items()}
    return [local_to_index[t] for t in local_targets]


def _refuse_label_files(labels_file: Optional[str], meta_file: Optional[str], reason: str) -> None:
    """Refuse ``--labels``/``--meta`` for data that does not use them (``reason`` says why), rather than
    ignore them."""
    given = [f'--{flag} {value}' for flag, value in (('labels', labels_file), ('meta', meta_file)) if value]
    if given:
        verb = 'give' if len(given) > 1 else 'gives'
        raise UserError(f'{" and ".join(given)} {verb} the labels of a flat ILSVRC2012_val_* folder, but {reason}; '
                        f'leave {" and ".join(g.split()[0] for g in given)} out.')


def _flat_targets(filenames: List[str], space: LabelSpace, roots: Sequence[Path], labels_file: Optional[Path],
                  meta_file: Optional[Path], required: bool) -> Tuple[List[int], str]:
    """Targets of flat ``ILSVRC2012_val_*`` files from the devkit or LOC ground truth."""
    if space.kind not in _FLAT_KINDS:
        hint = (' For ILSVRC2012_val_* files labelled by --labels/--meta, add --dataset imagenet.'
                if labels_file or meta_file else '')
        raise UserError(f'{space.dataset} images must be in class folders ({space.expected_names}); '
                        f'found image files directly in {roots[0]}.{hint}')
    if not required and labels_file is None and meta_file is None:
        try:
            truth, source = find_ground_truth(roots, None, meta_file)
        except UserError:
            return [-1] * len(filenames), 'none (ReaL labels only)'
    else:
        truth, source = find_ground_truth(roots, labels_file, meta_file)
    synsets = synset_to_index()
    targets, missing = [], []
    for name in filenames:
        synset = truth.get(val_image_number(name) or -1)
        if synset is None:
            missing.append(name)
        elif synset not in synsets:
            raise UserError(f'The ground truth {source} gives {name} the class {synset!r}, not an ImageNet-1k '
                            f'synset.')
        else:
            targets.append(synsets[synset])
    if missing:
        raise UserError(f'{len(missing)} images have no label in {source}, e.g. {", ".join(missing[:3])}. The flat '
                        f'layout needs ILSVRC2012_val_XXXXXXXX file names listed in the ground truth.')
    return targets, source


def _hf_images(name: str, split: Optional[str], space: LabelSpace) -> EvalImages:
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise UserError('Hugging Face datasets need the `datasets` package: pip install "srm-zoo[hf-datasets]".') \
            from None
    if space.kind not in _FLAT_KINDS:
        raise UserError(f'{HF_PREFIX} data is read with its own label indices, which the zoo trusts only for '
                        f'ImageNet-1k (--dataset imagenet or imagenet-real).')
    hf_split = split or 'validation'
    try:
        reader = create_reader(name, root=None, split=hf_split)
    except Exception as error:  # noqa: BLE001 - any loading failure is the user's data
        raise UserError(f'Cannot load the Hugging Face dataset {name[len(HF_PREFIX):]!r} split {hf_split!r}: '
                        f'{error}') from None
    targets = [int(t) for t in reader.iter_targets()]
    if any(not 0 <= t < space.model_classes for t in targets):
        raise UserError(f'{name} has labels outside 0..{space.model_classes - 1} (class-count mismatch).')
    filenames = reader.filenames(basename=True) if space.kind == 'imagenet-real' else []
    return EvalImages(reader, targets, filenames, name, canonical_split(hf_split), split is not None, 'hfds',
                      f'{name} labels (ImageNet-1k order)')


def load_images(data: str, space: LabelSpace, split: Optional[str] = None, labels_file: Optional[str] = None,
                meta_file: Optional[str] = None) -> EvalImages:
    """Locate the images of ``data`` and give each its target in ``space`` (a UserError on bad input)."""
    if not os.path.exists(data) and data.lower().startswith(HF_PREFIX):
        _refuse_label_files(labels_file, meta_file, f'{data} has its own labels')
        images = _hf_images(data, split, space)
    else:
        root = Path(data).expanduser()
        if not root.exists():
            raise UserError(f'--data {data} does not exist.')
        if root.is_dir() and not any(root.iterdir()):
            raise UserError(f'--data {data} is an empty folder.')
        path, split_name, split_named = resolve_split(root, split)
        reader, layout = _open_reader(path)
        names = _class_names(reader)
        filenames = ([os.path.relpath(file, root) for file, _ in reader.samples] if layout == 'folder'
                     else reader.filenames())
        if '' in names:
            if len(names) > 1:
                raise UserError(f'{path} holds images both directly and in class folders; use one layout.')
            layout = f'{layout}-flat'
            roots = [path if path.is_dir() else path.parent, root, root.parent]
            targets, source = _flat_targets(filenames, space, roots, labels_file and Path(labels_file),
                                            meta_file and Path(meta_file), required=space.kind != 'imagenet-real')
        else:
            _refuse_label_files(labels_file, meta_file, f'{path} holds class folders, whose names are the labels')
            _refuse_nested_images(_image_folders(reader, path, layout), filenames, layout)
            folders = _class_folders(path, names) if layout == 'folder' else sorted(names, key=names.get)
            targets = _folder_targets(_local_targets(reader), names, space, folders)
            source = f'class folder names -> {space.expected_names}'
        images = EvalImages(reader, targets, filenames, str(path), split_name, split_named, layout, source)
    if space.kind == 'imagenet-real':
        images.real_labels = real_labels_of(images.filenames)
    return images
