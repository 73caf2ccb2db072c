"""``srm-zoo train`` compiled with CUDA graphs against the same run in eager mode.

CUDA graphs overwrite a replay's outputs on the next replay, the backward pass's gradients included,
so a training loop that lets autograd keep them as the parameters' gradients loses what gradient
accumulation summed. The check trains one epoch of an SRM CIFAR ResNet on random images twice from
the same weights, with gradient accumulation, eagerly and with ``torch.compile`` in a CUDA-graph mode,
and compares the two weight updates.
"""
import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from ..compiling import cudagraph_skips
from ..training import TrainConfig, train
from ..training.state import CHECKPOINT_NAME, load_checkpoint

__all__ = ['compiled_training_checks', 'update_difference', 'write_random_image_folder']

MODEL = 'srm_resnet20_cifar'
TOLERANCE = 1e-2  # losing one of two accumulated gradients changes the update by about half


def write_random_image_folder(root: Path, size: int = 16, classes: Sequence[str] = ('a', 'b'),
                              counts: Tuple[int, int] = (8, 3)) -> None:
    """An image folder of random RGB PNGs: per class (default two), ``counts`` training and evaluation images."""
    rng = np.random.default_rng(0)
    for split, count in zip(('train', 'validation'), counts):
        for label in classes:
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f'{index}.png')


def update_difference(keys: Sequence[str], initial: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor],
                      actual: Dict[str, torch.Tensor]) -> float:
    """``|actual - expected| / |expected - initial|`` over the state-dict entries ``keys``: how far one
    run's update of those tensors is from another's."""
    expected_update = torch.cat([(expected[k].double() - initial[k].double()).flatten() for k in keys])
    difference = torch.cat([(actual[k].double() - expected[k].double()).flatten() for k in keys])
    return (difference.norm() / expected_update.norm().clamp_min(1e-30)).item()


def compiled_training_checks(device: torch.device, compile_mode: str = 'reduce-overhead') -> List[Dict[str, Any]]:
    """One epoch of ``srm-zoo train`` (recipe ``digits``, 2 optimiser steps of 2 accumulated batches of
    4) compiled with ``compile_mode`` against eager mode, from the same weights: the updates of the
    parameters and of the BatchNorm running statistics; each check also reports how many compiled
    graphs ran without CUDA graphs."""
    torch.manual_seed(0)
    model = timm.create_model(MODEL, num_classes=2)
    initial = model.state_dict()
    parts = {'parameters': [name for name, _ in model.named_parameters()],
             'BatchNorm running statistics': [name for name in initial if name.endswith(('_mean', '_var'))]}
    with tempfile.TemporaryDirectory(prefix='srm_zoo_train_check_') as tmp:
        root = Path(tmp)
        write_random_image_folder(root / 'data')
        save_file(initial, str(root / 'initial.safetensors'))
        eager = TrainConfig(model=MODEL, data=str(root / 'data'), recipe='digits', output=str(root / 'eager'),
                            epochs=1, batch_size=4, grad_accum=2, img_size=16, workers=0, device=str(device),
                            channels_last=device.type == 'cuda', initial_checkpoint=str(root / 'initial.safetensors'))
        compiled = dataclasses.replace(eager, output=str(root / 'compiled'), compile=True, compile_mode=compile_mode)
        train(eager)
        torch.compiler.reset()  # earlier compiles in this process count towards the recompile limit
        skips_before = cudagraph_skips()
        train(compiled)
        skips = cudagraph_skips() - skips_before
        trained = [load_checkpoint(Path(config.output) / CHECKPOINT_NAME)['model'] for config in (eager, compiled)]
    checks = []
    for part, keys in parts.items():
        error = update_difference(keys, initial, *trained)
        checks.append(dict(check=f'srm-zoo train, torch.compile {compile_mode}, gradient accumulation 2: {part} '
                           'against eager', error=error, tolerance=TOLERANCE, cudagraph_skips=skips,
                           passed=error <= TOLERANCE))
    return checks
