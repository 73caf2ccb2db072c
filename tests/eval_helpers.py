"""Small on-disk image sets and an independent plain evaluation for the ``srm-zoo eval`` tests."""
import json
import pkgutil
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import randomize_

IMG_SIZE, CROP_PCT, RESIZE = 32, 0.875, 36  # floor(32 / 0.875) = 36
SIZES = ((48, 48), (48, 64), (64, 48))  # (height, width): resized to 36x36, 36x48, 48x36, exact integers
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
RANKS = (0, 3, 7)  # image i is labelled with its (i % 3)-th ranked class: top-1 hit, top-5 hit, miss


def imagenet_synsets() -> List[str]:
    return pkgutil.get_data('timm.data', '_info/imagenet_synsets.txt').decode().split()


def timm_index_file(name: str) -> List[int]:
    return [int(x) for x in pkgutil.get_data('timm.data', f'_info/{name}').decode().split()]


def real_label_table() -> list:
    return json.loads(pkgutil.get_data('timm.data', '_info/imagenet_real_labels.json').decode())


def write_images(folder: Path, count: int, seed: int = 0, prefix: str = 'img') -> List[Path]:
    """``count`` random JPEGs of the sizes in SIZES."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        height, width = SIZES[i % len(SIZES)]
        pixels = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).resize((width, height), Image.NEAREST)
        noise = rng.integers(-20, 21, (height, width, 3))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.int64) + noise, 0, 255).astype(np.uint8))
        path = folder / f'{prefix}{i:03d}.JPEG'
        image.save(path, quality=90)
        paths.append(path)
    return paths


def plain_tensor(path: Path, mean=CIFAR_MEAN, std=CIFAR_STD) -> torch.Tensor:
    """Resize the short side to 36 (bilinear), center-crop 32, scale to [0, 1], normalise: by hand."""
    image = Image.open(path).convert('RGB')
    width, height = image.size
    if width <= height:
        size = (RESIZE, height * RESIZE // width)
    else:
        size = (width * RESIZE // height, RESIZE)
    image = image.resize(size, Image.BILINEAR)
    left, top = (size[0] - IMG_SIZE) // 2, (size[1] - IMG_SIZE) // 2
    pixels = np.asarray(image.crop((left, top, left + IMG_SIZE, top + IMG_SIZE)), dtype=np.float32) / 255.0
    pixels = (pixels - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1)


def plain_logits(model: torch.nn.Module, paths: Sequence[Path]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.stack([plain_tensor(p) for p in paths]))


def ranked_targets(logits: torch.Tensor) -> List[int]:
    """Image i gets its (RANKS[i % 3])-th ranked class as label."""
    order = logits.argsort(dim=1, descending=True)
    return [int(order[i, RANKS[i % len(RANKS)]]) for i in range(len(logits))]


def plain_scores(logits: torch.Tensor, targets: Sequence[int]) -> Dict[str, float]:
    """top-1/top-5 (percent) and mean cross-entropy, computed directly."""
    targets = torch.tensor(list(targets))
    top5 = logits.topk(5, dim=1).indices
    return {
        'top1': 100.0 * float((top5[:, 0] == targets).float().mean()),
        'top5': 100.0 * float((top5 == targets[:, None]).any(dim=1).float().mean()),
        'loss': float(F.cross_entropy(logits, targets)),
        'num_images': len(targets),
    }


def make_model(tmp: Path, num_classes: int = 1000, name: str = 'srm_resnet20_cifar', seed: int = 0):
    """A randomised model and its checkpoint file."""
    model = randomize_(timm.create_model(name, num_classes=num_classes), seed=seed).eval()
    path = tmp / f'{name}_{num_classes}_{seed}.pth'
    torch.save(model.state_dict(), path)
    return model, path


def place(files: Sequence[Path], folders: Sequence[str], root: Path, names: Optional[Sequence[str]] = None) -> Path:
    """Copy file i to ``root/folders[i]/names[i]``."""
    for i, (source, folder) in enumerate(zip(files, folders)):
        target = root / folder / (names[i] if names else source.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    return root
