"""`srm-zoo release`: every input is checked before anything is written, and --embed writes only into the package
under the package's own manifest."""
import json

import pytest
import torch
from safetensors.torch import load_file

from srm_zoo.benchmark.train_check import write_random_image_folder
from srm_zoo.checkpoint import file_sha256
from srm_zoo.cli import main
from srm_zoo.manifest import find_release, use_manifest

from .helpers import MODEL

NAME = 'srm_resnet20_cifar.sklearn_digits'


@pytest.fixture(scope='module')
def small_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp('small')
    write_random_image_folder(root)
    return root


def _package_files():
    shipped = find_release(*NAME.split('.'))
    return {p.name: file_sha256(p) for p in shipped.embedded_dir.iterdir()}


def test_embed_is_refused_under_another_manifest_and_writes_nothing(small_folder, tmp_path, capsys):
    shipped = find_release(*NAME.split('.'))
    before = _package_files()
    manifest, cards = tmp_path / 'manifest.json', tmp_path / 'cards'
    with use_manifest(manifest):
        rc = main(['release', NAME, '--checkpoint', str(shipped.embedded_dir / 'model.safetensors'), '--data',
                   str(small_folder), '--split', 'validation', '--embed', '--cards', str(cards)])
    assert rc == 2
    assert 'SRM_ZOO_MANIFEST' in capsys.readouterr().err
    assert _package_files() == before and 'README.md' in before
    assert not manifest.exists() and not cards.exists()


@pytest.mark.parametrize('change, message', [
    (dict(split='test'), "No folder for split 'test'"),
    (dict(out='afile/out'), "'afile' is a file"),
    (dict(cards='afile'), "--cards 'afile' is a file"),
    (dict(repo_id='not a repo id'), 'is not a Hub repository id'),
    (dict(checkpoint='missing.pth'), "Checkpoint 'missing.pth' does not exist"),
])
def test_bad_inputs_are_refused_before_anything_is_written(small_folder, tmp_path, capsys, monkeypatch, change,
                                                           message):
    shipped = find_release(*NAME.split('.'))
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'afile').write_text('')
    args = dict(checkpoint=str(shipped.embedded_dir / 'model.safetensors'), split='validation', out='out',
                cards='cards', repo_id=None)
    args.update(change)
    argv = ['release', NAME, '--checkpoint', args['checkpoint'], '--data', str(small_folder), '--split',
            args['split'], '--out', args['out'], '--cards', args['cards']]
    with use_manifest(tmp_path / 'manifest.json'):
        rc = main(argv + (['--repo-id', args['repo_id']] if args['repo_id'] else []))
    assert rc == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['afile']


@pytest.fixture(scope='module')
def modern_run(tmp_path_factory):
    """An `srm-zoo train --recipe modern` run (it keeps an EMA) of 1 epoch on 10 classes of random images."""
    root = tmp_path_factory.mktemp('modern')
    write_random_image_folder(root / 'data', classes=[str(i) for i in range(10)], counts=(2, 1))
    assert main(['train', '--model', 'srm_resnet20_cifar', '--data', str(root / 'data'), '--output',
                 str(root / 'run'), '--recipe', 'modern', '--epochs', '1', '--img-size', '16', '--batch-size', '4',
                 '--workers', '0', '--device', 'cpu', '--lr', '0.01']) == 0
    return root / 'data', root / 'run' / 'checkpoint.pth'


def _ema_weights(checkpoint):
    ema = torch.load(checkpoint, weights_only=True)['ema']
    assert all(k.startswith('module.') for k in ema)  # ModelEmaV3's own keys
    return {k[len('module.'):]: v for k, v in ema.items()}


def test_export_and_release_read_the_ema_of_training_checkpoints(modern_run, tmp_path, capsys):
    data, checkpoint = modern_run
    ema = _ema_weights(checkpoint)
    plain = torch.load(checkpoint, weights_only=True)['model']
    assert any(not torch.equal(plain[k], v) for k, v in ema.items())
    assert main(['export', NAME, '--checkpoint', str(checkpoint), '--use-ema', '--out', str(tmp_path / 'ema')]) == 0
    assert capsys.readouterr().err == ''
    assert_state_equal(load_file(str(tmp_path / 'ema' / 'model.safetensors')), ema)
    provenance = json.loads((tmp_path / 'ema' / 'srm_zoo_release.json').read_text())['provenance']
    assert (provenance['weights'], provenance['recipe']) == ('EMA', 'modern')  # the tag's recipe is digits
    assert '- **Recipe:** modern' in (tmp_path / 'ema' / 'README.md').read_text()

    assert main(['export', NAME, '--checkpoint', str(checkpoint), '--out', str(tmp_path / 'plain')]) == 0
    assert 'also holds EMA weights' in capsys.readouterr().err
    assert_state_equal(load_file(str(tmp_path / 'plain' / 'model.safetensors')), plain)

    with use_manifest(tmp_path / 'manifest.json'):
        assert main(['release', NAME, '--checkpoint', str(checkpoint), '--data', str(data), '--split', 'validation',
                     '--out', str(tmp_path / 'released'), '--cards', str(tmp_path / 'cards')]) == 0
    assert_state_equal(load_file(str(tmp_path / 'released' / 'model.safetensors')), ema)


def assert_state_equal(actual, expected):
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[k], v) for k, v in expected.items())


def test_export_refuses_results_of_another_tag(trained, tmp_path, capsys):
    checkpoint, _, results = trained
    rows = json.loads(results.read_text())
    for row in rows:
        row['model'] = f'{MODEL}.sklearn_digits'
    other_tag = tmp_path / 'results.json'
    other_tag.write_text(json.dumps(rows))
    assert main(['export', f'{MODEL}.cifar10', '--checkpoint', str(checkpoint), '--results', str(other_tag),
                 '--out', str(tmp_path / 'out')]) == 2
    assert f"are of '{MODEL}.sklearn_digits'" in capsys.readouterr().err
    assert main(['export', f'{MODEL}.sklearn_digits', '--checkpoint', str(checkpoint), '--results', str(other_tag),
                 '--out', str(tmp_path / 'out')]) == 0
