"""Datasets and loaders of a training run: timm datasets and transforms, torch samplers and loaders."""
from pathlib import Path
from typing import Any, Dict, List, Tuple

from timm.data import create_dataset, create_transform
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ..errors import UserError
from ..distributed import DistContext, shard_indices
from .recipes import Recipe

__all__ = ['load_split', 'class_names', 'train_loader', 'eval_loader']


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


def class_names(dataset) -> List[str]:
    """Class folder names in label order."""
    class_to_idx: Dict[str, int] = dataset.reader.class_to_idx
    return [name for name, _ in sorted(class_to_idx.items(), key=lambda item: item[1])]


def train_loader(dataset, recipe: Recipe, data_config: Dict[str, Any], batch_size: int, workers: int,
                 seed: int, ctx: DistContext) -> Tuple[DataLoader, DistributedSampler]:
    """Shuffled, augmented batches of this process's shard; call ``sampler.set_epoch`` every epoch.

    The shuffle depends only on ``seed`` and the epoch; augmentation and worker seeds come from
    the global generators, whose states the checkpoints keep.
    """
    dataset.transform = create_transform(
        data_config['input_size'], is_training=True, scale=recipe.scale, ratio=recipe.ratio,
        hflip=recipe.hflip, color_jitter=recipe.color_jitter or 0.0, auto_augment=recipe.auto_augment,
        interpolation=recipe.train_interpolation, mean=data_config['mean'], std=data_config['std'])
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    if len(sampler) < batch_size:
        raise UserError(f'Each of the {ctx.world_size} process(es) sees {len(sampler)} training images, fewer '
                        f'than one batch of {batch_size}. Use a smaller --batch-size.')
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                        pin_memory=ctx.device.type == 'cuda', persistent_workers=False)
    return loader, sampler


def eval_loader(dataset, data_config: Dict[str, Any], batch_size: int, workers: int, ctx: DistContext) -> DataLoader:
    """This process's disjoint share of the evaluation images (every image once over all processes)."""
    dataset.transform = create_transform(**data_config, is_training=False)
    shard = Subset(dataset, shard_indices(len(dataset), ctx))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=ctx.device.type == 'cuda')
