"""Datasets and loaders of a training run: timm datasets and transforms, torch samplers and loaders.

Images are read as ``srm-zoo eval`` reads them (:class:`~srm_zoo.evaluation.data.EvalImageDataset`): an
unreadable evaluation image is skipped and counted, never replaced by a neighbour, and an unreadable training
image is replaced by the next readable one, as timm's ``ImageDataset`` does, and counted.
"""
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch
from timm.data import create_dataset, create_transform
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..errors import UserError
from ..distributed import DistContext, shard_indices
from ..evaluation.data import EvalImageDataset, EvalImages, collate_skipping_bad
from .recipes import Recipe

__all__ = ['load_split', 'class_names', 'split_images', 'check_readable', 'image_paths', 'train_loader',
           'eval_loader']


def load_split(root: str, split: str, is_training: bool):
    """timm's image-folder dataset for ``root``/``split`` (timm's split-name synonyms apply); a split
    without its folder is refused (timm would read every image under ``root``, other splits included)."""
    if not Path(root).is_dir():
        raise UserError(f'Data folder {root} does not exist.')
    try:
        dataset = create_dataset('', root=root, split=split, is_training=is_training)
    except (RuntimeError, FileNotFoundError, OSError) as error:
        raise UserError(f'No images for split {split!r} under {root}: {error} Expected an image folder '
                        f'such as {root}/{split}/<class>/<image>.') from None
    if Path(dataset.reader.root).resolve() == Path(root).resolve():  # timm reads the whole root instead
        raise UserError(f'No folder for split {split!r} under {root} (nor for a timm synonym of it, such as val '
                        f'for validation): expected {root}/{split}/<class>/<image>.')
    if len(dataset) == 0:
        raise UserError(f'Split {split!r} under {root} holds no images.')
    return dataset


def class_names(dataset, split: str) -> List[str]:
    """Class folder names in label order; a :class:`UserError` for images directly in the split's folder (timm
    would give them a class named '') and for a split of one class (its loss is 0 and its accuracy 100%)."""
    class_to_idx: Dict[str, int] = dataset.reader.class_to_idx
    names = [name for name, _ in sorted(class_to_idx.items(), key=lambda item: item[1])]
    root = dataset.reader.root
    if '' in names:
        raise UserError(f'Split {split!r} has images directly in {root}: training needs one folder per class, '
                        f'{root}/<class>/<image>.')
    if len(names) < 2:
        raise UserError(f'Split {split!r} under {root} has one class ({names[0]}): training needs two or more.')
    return names


def split_images(dataset, split: str) -> EvalImages:
    """The images of a :func:`load_split` dataset, to be read as ``srm-zoo eval`` reads them."""
    reader = dataset.reader
    return EvalImages(reader=reader, targets=[target for _, target in reader.samples], filenames=[],
                      path=str(reader.root), split=split, split_named=True, layout='class folders',
                      label_source='class folder names')


def check_readable(images: EvalImages) -> None:
    """Refuse a split none of whose images can be read; reads images only up to the first readable one."""
    readable = EvalImageDataset(images, transform=lambda image: image)
    if all(readable[index][0] is None for index in range(len(readable))):
        raise UserError(f'None of the {len(images)} images of split {images.split!r} can be read, e.g. '
                        f'{image_paths(images, [0])[0]}. Fix or replace them.')


def image_paths(images: EvalImages, indices: Sequence[int]) -> List[str]:
    """The paths of images ``indices``, for messages."""
    return [os.path.join(images.path, images.name(index)) for index in indices]


class _ReplacingUnreadable(Dataset):
    """Training images, each with the indices of the unreadable images it replaces: an unreadable image is
    replaced by the next readable one, as timm's ``ImageDataset`` does, so that every batch stays full."""

    def __init__(self, images: EvalImageDataset) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int, List[int]]:
        replaced = []
        for _ in range(len(self.images)):
            image, target, _ = self.images[index]
            if image is not None:
                return image, target, replaced
            replaced.append(index)
            index = (index + 1) % len(self.images)
        raise UserError(f'None of the {len(self.images)} training images can be read any more.')


def _collate_replacing(batch: Sequence[Tuple[torch.Tensor, int, List[int]]]):
    """Images, targets and the indices of the unreadable images replaced in this batch."""
    images, targets, replaced = zip(*batch)
    return torch.stack(images), torch.tensor(targets, dtype=torch.long), [i for part in replaced for i in part]


def train_loader(images: EvalImages, recipe: Recipe, data_config: Dict[str, Any], batch_size: int, workers: int,
                 seed: int, ctx: DistContext) -> Tuple[DataLoader, DistributedSampler]:
    """Shuffled, augmented full batches of this process's shard (timm's training loader drops the last
    incomplete one too), each with the indices of the unreadable images replaced in it; call
    ``sampler.set_epoch`` every epoch.

    The shuffle depends only on ``seed`` and the epoch; augmentation and worker seeds come from
    the global generators, whose states the checkpoints keep.
    """
    transform = create_transform(
        data_config['input_size'], is_training=True, scale=recipe.scale, ratio=recipe.ratio,
        hflip=recipe.hflip, color_jitter=recipe.color_jitter or 0.0, auto_augment=recipe.auto_augment,
        interpolation=recipe.train_interpolation, mean=data_config['mean'], std=data_config['std'])
    dataset = _ReplacingUnreadable(EvalImageDataset(images, transform))
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    if len(sampler) < batch_size:
        raise UserError(f'Each of the {ctx.world_size} process(es) sees {len(sampler)} training images, fewer '
                        f'than one batch of {batch_size}. Use a smaller --batch-size.')
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                        collate_fn=_collate_replacing, pin_memory=ctx.device.type == 'cuda', persistent_workers=False)
    return loader, sampler


def eval_loader(images: EvalImages, data_config: Dict[str, Any], batch_size: int, workers: int,
                ctx: DistContext) -> DataLoader:
    """This process's disjoint share of the evaluation images (every image once over all processes), in
    batches of (images or None, targets, indices, indices of the unreadable images skipped)."""
    dataset = EvalImageDataset(images, create_transform(**data_config, is_training=False))
    shard = Subset(dataset, shard_indices(len(images), ctx))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_skipping_bad, pin_memory=ctx.device.type == 'cuda')
