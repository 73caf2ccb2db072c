"""Checkpoints as people have them: layouts, prefixes, safetensors, and refusals that name the mismatches."""
import argparse

import pytest
import timm
import torch
from safetensors.torch import save_file

from srm_zoo.checkpoint import load_checkpoint_for
from srm_zoo.errors import UserError

from .helpers import MODEL, assert_same_weights, make_checkpoint


@pytest.mark.parametrize('layout', ['plain', 'state_dict', 'model', 'module_prefix', 'ema', 'safetensors'])
def test_every_layout_loads_exactly(tmp_path, layout):
    path = tmp_path / ('weights.safetensors' if layout == 'safetensors' else 'checkpoint.pth')
    expected = make_checkpoint(tmp_path / 'source.pth', seed=2, wrap='')
    decoy = {k: torch.zeros_like(v) for k, v in expected.items()}
    if layout == 'plain':
        torch.save(expected, path)
    elif layout == 'state_dict':
        torch.save({'state_dict': expected, 'epoch': 9, 'arch': MODEL}, path)
    elif layout == 'model':
        torch.save({'model': expected, 'optimizer': {'lr': 0.1}}, path)
    elif layout == 'module_prefix':
        torch.save({'state_dict': {f'module.{k}': v for k, v in expected.items()}}, path)
    elif layout == 'ema':
        torch.save({'state_dict': decoy, 'state_dict_ema': expected}, path)
    else:
        save_file(expected, str(path))
    model = load_checkpoint_for(timm.create_model(MODEL), path, use_ema=layout == 'ema')
    assert_same_weights(model, expected)


def test_mismatching_checkpoint_is_refused_naming_the_keys(tmp_path):
    make_checkpoint(tmp_path / 'deeper.pth', seed=0, model='srm_resnet32_cifar', num_classes=100)
    with pytest.raises(UserError) as error:
        load_checkpoint_for(timm.create_model(MODEL), tmp_path / 'deeper.pth')
    message = str(error.value)
    assert 'does not fit srm_resnet20_cifar' in message
    assert 'not in the model: layer1.3.conv1.weight' in message
    assert 'fc.weight: checkpoint (100, 64) vs model (10, 64)' in message


def test_pickled_objects_are_refused(tmp_path):
    state_dict = timm.create_model(MODEL).state_dict()
    torch.save({'state_dict': state_dict, 'args': argparse.Namespace(lr=0.1)}, tmp_path / 'train.pth.tar')
    with pytest.raises(UserError, match='weights_only=True'):
        load_checkpoint_for(timm.create_model(MODEL), tmp_path / 'train.pth.tar')


def test_missing_ema_and_missing_file_are_user_errors(tmp_path):
    make_checkpoint(tmp_path / 'plain.pth', seed=0)
    with pytest.raises(UserError, match='no EMA weights'):
        load_checkpoint_for(timm.create_model(MODEL), tmp_path / 'plain.pth', use_ema=True)
    with pytest.raises(UserError, match='does not exist'):
        load_checkpoint_for(timm.create_model(MODEL), tmp_path / 'absent.pth')
