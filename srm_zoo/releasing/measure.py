"""Accuracy of a model on an image folder split, with the preprocessing of its timm pretrained cfg."""
from typing import Any, Dict

import torch
from timm.data import create_transform, resolve_data_config
from torch.utils.data import DataLoader

from ..errors import UserError
from ..evaluation.data import EvalImageDataset, collate_skipping_bad
from ..evaluation.metrics import Counts, recorded_percent, score_batch
from ..evaluation.results import eval_settings
from ..training.data import image_paths, load_split, split_images

__all__ = ['measure_accuracy']


@torch.no_grad()
def measure_accuracy(model: torch.nn.Module, root: str, split: str, batch_size: int = 256,
                     workers: int = 0) -> Dict[str, Any]:
    """timm-style result row (``top1``, ``top5`` in percent as the zoo records them, ``num_images``, ``img_size``,
    ``crop_pct``, ``interpolation``) of ``model`` in eval mode on ``root``/``split``, every image of which must
    be readable (a release states what its weights score on the whole split).

    Preprocessing is timm's evaluation transform for the model's pretrained cfg
    (``resolve_data_config`` + ``create_transform(is_training=False)``).
    """
    data_config = resolve_data_config(model=model)
    images = split_images(load_split(root, split, is_training=False), split)
    dataset = EvalImageDataset(images, create_transform(**data_config))
    model.eval()
    counts, unreadable = Counts(), []
    for batch, targets, _, bad in DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                             collate_fn=collate_skipping_bad):
        unreadable += bad.tolist()
        if batch is not None:
            counts += score_batch(model(batch), targets)
    if unreadable:
        raise UserError(f'{len(unreadable)} of the {len(images)} images of split {split!r} cannot be read, e.g. '
                        f'{", ".join(image_paths(images, unreadable[:3]))}: a release measures every image of '
                        'the split; fix or remove them.')
    return dict(top1=recorded_percent(counts.top1), top5=recorded_percent(counts.top5), num_images=counts.images,
                **eval_settings(data_config))
