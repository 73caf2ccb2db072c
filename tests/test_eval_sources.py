"""`srm-zoo eval --model local-dir:FOLDER` (and hf-hub:, whose Hub server tests are in tests/hub): the model its config
builds, its one weights file loaded strictly, and results that name what was evaluated."""
import json
from pathlib import Path

import pytest
import timm
import torch
from timm.models import save_for_hf

from conftest import randomize_
from srm_zoo.benchmark.train_check import write_random_image_folder
from srm_zoo.catalogue import DATASET_LABEL_NAMES
from srm_zoo.checkpoint import file_sha256
from srm_zoo.cli import main

CLASSES = ('a', 'b')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    write_random_image_folder(root, size=32, classes=CLASSES, counts=(0, 3))
    return root


def _save(folder: Path, name: str = 'srm_resnet20_cifar', **kwargs) -> torch.nn.Module:
    """A randomised ``name`` with one output per class, saved in timm's format (its weights as model.safetensors)."""
    model = randomize_(timm.create_model(name, num_classes=len(CLASSES), **kwargs)).eval()
    save_for_hf(model, str(folder), safe_serialization=True, model_config=dict(label_names=list(CLASSES)),
                model_args=kwargs or None)
    return model


def _eval(model: str, data: Path, *extra: str) -> int:
    return main(['eval', '--model', model, '--data', str(data), '--split', 'validation', '--workers', '0',
                 '--device', 'cpu', *extra])


def _results(model: str, data: Path, path: Path, *extra: str) -> dict:
    assert _eval(model, data, *extra, '--results-file', str(path)) == 0
    return json.loads(path.read_text())


def test_a_folder_is_evaluated_as_its_weights_file_under_the_architecture_its_config_builds(data, tmp_path):
    """The folder's only weights file (weights.safetensors here, a name timm's format does not use) is the one
    evaluated and hashed; the results name the architecture timm builds (config.json's), not another one that its
    pretrained_cfg names; the figures are those of the same file given as --checkpoint."""
    folder = tmp_path / 'run'
    _save(folder)
    (folder / 'model.safetensors').rename(folder / 'weights.safetensors')
    config = json.loads((folder / 'config.json').read_text())
    config['pretrained_cfg']['architecture'] = 'srm_resnet50'
    (folder / 'config.json').write_text(json.dumps(config))
    result = _results(f'local-dir:{folder}', data, tmp_path / 'dir.json')
    given = _results('srm_resnet20_cifar', data, tmp_path / 'checkpoint.json', '--checkpoint',
                     str(folder / 'weights.safetensors'), '--num-classes', '2')
    assert result['checkpoint_sha256'] == given['checkpoint_sha256'] == file_sha256(folder / 'weights.safetensors')
    same = ('model', 'attention', 'dataset', 'param_count', 'top1', 'top5', 'loss')
    assert {k: result[k] for k in same} == {k: given[k] for k in same}
    assert result['model'] == 'srm_resnet20_cifar.sklearn_digits' and result['attention'] == 'srm'


@pytest.mark.parametrize('files, problem', [
    (('a.safetensors', 'b.pth'), 'the folder holds 2 weights files (a.safetensors, b.pth)'),
    ((), 'the folder holds no weights file'),
])
def test_a_folder_without_one_weights_file_is_refused(data, tmp_path, capsys, files, problem):
    _save(tmp_path)
    weights = (tmp_path / 'model.safetensors').read_bytes()
    (tmp_path / 'model.safetensors').unlink()
    for name in files:
        (tmp_path / name).write_bytes(weights)
    assert _eval(f'local-dir:{tmp_path}', data) == 2
    assert f'Cannot load local-dir:{tmp_path}: {problem}' in capsys.readouterr().err


def test_weights_that_do_not_fit_the_config_are_named_in_one_line(data, tmp_path, capsys):
    """SE weights in a folder whose config builds the SRM network: the mismatching keys, as for --checkpoint."""
    _save(tmp_path / 'se', attn_layer='se')
    _save(tmp_path / 'srm')
    (tmp_path / 'se' / 'model.safetensors').replace(tmp_path / 'srm' / 'model.safetensors')
    assert _eval(f'local-dir:{tmp_path / "srm"}', data) == 2
    error = capsys.readouterr().err
    assert f"The weights of local-dir:{tmp_path / 'srm'} (model.safetensors) does not fit srm_resnet20_cifar" in error
    assert 'key(s) missing' in error and len(error.strip().splitlines()) == 1


@pytest.mark.parametrize('name, kwargs, attention', [
    ('srm_resnet20_cifar', dict(attn_layer='se'), 'se'),
    ('srm_resnet20_cifar', dict(attn_layer='eca'), 'EcaModule'),
    ('resnet18', {}, None),
])
def test_the_results_record_the_attention_the_model_was_built_with(data, tmp_path, capsys, name, kwargs, attention):
    """A zoo network with another block attention is recorded with it, and cannot verify the SRM network's figures;
    timm's own models have no zoo attention, and the zoo states no figures for them."""
    _save(tmp_path / 'model', name, **kwargs)
    assert _results(f'local-dir:{tmp_path / "model"}', data, tmp_path / 'r.json')['attention'] == attention
    capsys.readouterr()
    assert _eval(f'local-dir:{tmp_path / "model"}', data, '--verify') == 2
    error = capsys.readouterr().err
    if attention is None:
        assert 'resnet18 is not a model of the zoo, so the zoo states no accuracy for it' in error
    else:
        assert f'these weights are of a counterpart with block attention {attention}' in error


def test_use_ema_and_checkpoint_are_refused_with_a_folder(data, tmp_path, capsys):
    _save(tmp_path)
    assert _eval(f'local-dir:{tmp_path}', data, '--use-ema') == 2
    assert f'but local-dir:{tmp_path} holds one set of weights' in capsys.readouterr().err
    assert _eval(f'local-dir:{tmp_path}', data, '--checkpoint', str(tmp_path / 'model.safetensors')) == 2
    assert f'but local-dir:{tmp_path} brings its own' in capsys.readouterr().err


def test_a_config_that_is_not_timm_s_is_named(data, tmp_path, capsys):
    _save(tmp_path)
    config = json.loads((tmp_path / 'config.json').read_text())
    del config['architecture']
    (tmp_path / 'config.json').write_text(json.dumps(config))
    assert _eval(f'local-dir:{tmp_path}', data) == 2
    assert "its config.json has no 'architecture' entry" in capsys.readouterr().err


def test_label_names_given_by_index_name_the_outputs(data, tmp_path):
    """timm's ``{index: name}`` form of label_names (indices become strings in JSON) names the outputs as the list
    form does."""
    _save(tmp_path / 'list')
    _save(tmp_path / 'dict')
    config = json.loads((tmp_path / 'dict' / 'config.json').read_text())
    config['label_names'] = {str(i): name for i, name in enumerate(CLASSES)}
    (tmp_path / 'dict' / 'config.json').write_text(json.dumps(config))
    listed, indexed = (_results(f'local-dir:{tmp_path / k}', data, tmp_path / f'{k}.json') for k in ('list', 'dict'))
    assert "the model's label names (a, b)" in indexed['labels']
    assert (indexed['top1'], indexed['loss']) == (listed['top1'], listed['loss'])


@pytest.mark.parametrize('names, dataset', [(DATASET_LABEL_NAMES['cifar10'], 'cifar10'),
                                           (tuple('abcdefghij'), 'folder')])
def test_a_tag_s_dataset_is_recorded_only_for_its_classes(tmp_path, names, dataset):
    """A folder of the cifar10 tag whose ten outputs are CIFAR-10's classes records results as cifar10; one whose
    ten outputs are another run's classes records them as a folder of its own."""
    model = randomize_(timm.create_model('srm_resnet20_cifar.cifar10')).eval()
    save_for_hf(model, str(tmp_path / 'model'), safe_serialization=True, model_config=dict(label_names=list(names)))
    write_random_image_folder(tmp_path / 'data', size=32, classes=names, counts=(0, 1))
    assert _results(f'local-dir:{tmp_path / "model"}', tmp_path / 'data', tmp_path / 'r.json')['dataset'] == dataset
