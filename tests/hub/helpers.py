"""Shared helpers of the Hub tests: trained-looking checkpoints, eval results, weight comparison."""
import json
from pathlib import Path

import timm
import torch

from conftest import randomize_
from srm_zoo.checkpoint import file_sha256
from srm_zoo.training import TrainConfig, attention_kwargs

MODEL = 'srm_resnet20_cifar'
TAG = 'cifar10'


def make_checkpoint(path: Path, seed: int, model: str = MODEL, wrap: str = 'state_dict', **kwargs) -> dict:
    """A randomised ``model`` saved as a training checkpoint would be; returns its state dict."""
    state_dict = randomize_(timm.create_model(model, **kwargs), seed=seed).state_dict()
    torch.save({wrap: state_dict, 'epoch': 3} if wrap else state_dict, path)
    return state_dict


def make_training_checkpoint(path: Path, name: str, attention: str, seed: int = 0, run_seed: int = 0) -> dict:
    """A ``name`` (``model.tag``) with ``attention``, randomised with ``seed``, saved as ``srm-zoo train --attention``
    saves its checkpoints (weights under ``model``, the run's settings, ``--seed run_seed``, under ``config``);
    returns its state dict."""
    model = randomize_(timm.create_model(name, **attention_kwargs(name, attention)), seed=seed)
    config = TrainConfig(model=name, data='data', recipe='digits', output='run', attention=attention, seed=run_seed)
    torch.save(dict(epoch=0, model=model.state_dict(), ema=None, config=config.to_dict()), path)
    return model.state_dict()


def make_results(path: Path, checkpoint: Path, rows=(('cifar10', 'test', 91.25, 99.5, 10000),)) -> Path:
    """An ``srm-zoo eval`` results file measured on ``checkpoint`` (one object, or a list for several rows)."""
    results = [dict(model=f'{MODEL}.{TAG}', top1=top1, top5=top5, num_images=n, loss=0.3, img_size=32, crop_pct=1.0,
                    interpolation='bilinear', dataset=dataset, split=split, checkpoint_sha256=file_sha256(checkpoint))
               for dataset, split, top1, top5, n in rows]
    path.write_text(json.dumps(results if len(results) > 1 else results[0]))
    return path


def assert_same_weights(model: torch.nn.Module, state_dict: dict) -> None:
    """Every tensor of ``model`` equals ``state_dict``'s, bit for bit."""
    loaded = model.state_dict()
    assert loaded.keys() == state_dict.keys()
    for key, value in state_dict.items():
        assert torch.equal(loaded[key], value), key
