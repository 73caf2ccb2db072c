"""`srm-zoo release`: every input is checked before anything is written, and --embed writes only into the package
under the package's own manifest."""
import json
import os
import shutil
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import srm_zoo
import srm_zoo.cli.release as release_cli
import srm_zoo.releasing.release as releasing
from srm_zoo.benchmark.train_check import write_random_image_folder
from srm_zoo.checkpoint import file_sha256, read_checkpoint
from srm_zoo.cli import main
from srm_zoo.errors import UserError
from srm_zoo.hub.export import weights_provenance
from srm_zoo.manifest import find_release, use_manifest
from srm_zoo.releasing import embed_release
from srm_zoo.training import get_recipe

from .helpers import MODEL, make_checkpoint, make_training_checkpoint

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


def test_embed_refuses_a_repo_id_and_writes_nothing(small_folder, tmp_path, capsys):
    """--repo-id publishes an --out folder: with --embed it would be ignored, so it is refused."""
    shipped = find_release(*NAME.split('.'))
    before = _package_files()
    rc = main(['release', NAME, '--checkpoint', str(shipped.embedded_dir / 'model.safetensors'), '--data',
               str(small_folder), '--split', 'validation', '--embed', '--repo-id', 'org/name', '--cards',
               str(tmp_path / 'cards')])
    assert rc == 2
    assert '--repo-id publishes a Hub repository folder written with --out' in capsys.readouterr().err
    assert _package_files() == before and not (tmp_path / 'cards').exists()


def test_embed_into_a_package_that_cannot_be_written_is_refused_before_measuring(small_folder, tmp_path, capsys,
                                                                                   monkeypatch):
    """A read-only installation refuses --embed before measuring, naming the package's folder (here os.access says
    so: root writes past permission bits, and a read-only mount needs privileges; the release itself is stubbed, so
    that a regression cannot write into this checkout's package)."""
    shipped = find_release(*NAME.split('.'))
    weights = shipped.embedded_dir.parent
    access = os.access
    monkeypatch.setattr(os, 'access', lambda path, mode, **kw: access(path, mode, **kw) and Path(path) != weights)
    measured = []
    monkeypatch.setattr(release_cli, 'embed_release', lambda *args, **kwargs: measured.append(args))
    rc = main(['release', NAME, '--checkpoint', str(shipped.embedded_dir / 'model.safetensors'), '--data',
               str(small_folder), '--split', 'validation', '--embed', '--cards', str(tmp_path / 'cards')])
    assert rc == 2 and not measured
    error = capsys.readouterr().err
    assert f"--embed {str(weights)!r} cannot be written: permission denied" in error and 'pip install -e .' in error


def test_a_failed_embed_leaves_the_embedded_weights_whole(tmp_path, monkeypatch):
    """The new folder is written aside and swapped in complete: a write that fails (a full disk) leaves the
    package's earlier weights as they were, and nothing else."""
    shipped = find_release(*NAME.split('.'))
    write_random_image_folder(tmp_path / 'data', size=32, classes=('0', '1'), counts=(0, 2))
    weights = tmp_path / 'weights'
    shutil.copytree(shipped.embedded_dir, weights / shipped.embedded_dir.name)
    before = {p.name: file_sha256(p) for p in (weights / shipped.embedded_dir.name).iterdir()}

    def disk_full(model, folder, **kwargs):
        Path(folder).mkdir(parents=True)
        (Path(folder) / 'model.safetensors').write_bytes(b'partial')
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(releasing, 'save_hf_folder', disk_full)
    with pytest.raises(OSError, match='No space left'):
        embed_release(NAME, str(shipped.embedded_dir / 'model.safetensors'), str(tmp_path / 'data'), 'validation',
                      weights_dir=weights)
    assert [p.name for p in weights.iterdir()] == [shipped.embedded_dir.name]
    assert {p.name: file_sha256(p) for p in (weights / shipped.embedded_dir.name).iterdir()} == before


@pytest.mark.parametrize('change, message', [
    (dict(split='test'), "No folder for split 'test'"),
    (dict(out='afile/out'), "'afile' is a file"),
    (dict(cards='afile', repo_id='org/name'), "--cards 'afile' is a file"),  # cards are written once recorded
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
def networks(tmp_path_factory):
    """Checkpoints of NAME with each attention: `srm-zoo train` checkpoints (recording it) and plain weights files."""
    root = tmp_path_factory.mktemp('networks')
    for seed, attention in enumerate(('srm', 'se', 'none')):
        make_training_checkpoint(root / f'{attention}-run.pth', NAME, attention, seed=seed)
        make_checkpoint(root / f'{attention}.pth', seed=seed, model=NAME, wrap='', **({} if attention == 'srm' else
                        dict(attn_layer='se' if attention == 'se' else '')))
    make_training_checkpoint(root / 'se-seed7.pth', NAME, 'se', seed=1, run_seed=7)  # another run's seed
    return root


def _release_out(small_folder, checkpoint, *extra):
    return main(['release', NAME, '--checkpoint', str(checkpoint), '--data', str(small_folder), '--split',
                 'validation', '--out', 'out', *extra])


@pytest.mark.parametrize('checkpoint, compare, message', [
    ('se-run.pth', [], 'se-run.pth\' was trained with --attention se (its recorded settings), but it is given as '
                       'the SRM network released.'),
    ('se.pth', [], 'se.pth\' does not fit srm_resnet20_cifar.sklearn_digits as the SRM network released: '),
    ('srm-run.pth', ['se=srm-run.pth'], 'srm-run.pth\' was trained with --attention srm (its recorded settings), '
                                        'but it is given as an SE counterpart (--compare se=).'),
    ('srm-run.pth', ['none=se.pth'], 'se.pth\' does not fit srm_resnet20_cifar.sklearn_digits as a plain counterpart'),
    ('srm-run.pth', ['se=se-seed7.pth'], "se-seed7.pth' (--compare se=) was trained otherwise than "),
])
def test_release_refuses_networks_of_another_attention_before_measuring(small_folder, networks, tmp_path, capsys,
                                                                         monkeypatch, checkpoint, compare, message):
    """The released checkpoint must be the SRM network and each --compare one the counterpart its label names;
    the message names the user's file (not a temporary one) and nothing is written."""
    monkeypatch.chdir(tmp_path)
    extra = [f'--compare={c.split("=")[0]}={networks / c.split("=")[1]}' for c in compare]
    with use_manifest(tmp_path / 'manifest.json'):
        assert _release_out(small_folder, networks / checkpoint, *extra) == 2
    err = capsys.readouterr().err
    assert f"Checkpoint '{networks}/{message}" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_embed_refuses_an_se_network(small_folder, networks, tmp_path):
    with pytest.raises(UserError, match='was trained with --attention se'):
        embed_release(NAME, str(networks / 'se-run.pth'), str(small_folder), 'validation', weights_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_release_out_measures_the_counterparts_and_writes_no_cards(small_folder, networks, tmp_path, capsys,
                                                                    monkeypatch):
    """--compare with --out is measured as with --embed and lands in the record and the card; nothing is recorded
    in the manifest without --repo-id, so no model card is regenerated (./model_cards stays unwritten)."""
    monkeypatch.chdir(tmp_path)
    with use_manifest(tmp_path / 'manifest.json'):
        assert _release_out(small_folder, networks / 'srm-run.pth', '--compare', f'se={networks / "se-run.pth"}',
                            '--compare', f'none={networks / "none.pth"}') == 0
    out = capsys.readouterr().out
    assert '  se: top-1 ' in out and '  none: top-1 ' in out and 'model card' not in out
    comparison = json.loads((tmp_path / 'out' / 'srm_zoo_release.json').read_text())['provenance']['comparison']
    assert sorted(comparison) == ['none', 'se', 'srm'] and all(r['num_images'] == 6 for r in comparison.values())
    card = (tmp_path / 'out' / 'README.md').read_text()
    assert '### Against its counterparts' in card and f'| SE | {comparison["se"]["top1"]:.2f} |' in card
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


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


def test_release_records_the_users_checkpoint_and_its_training(modern_run, tmp_path):
    """The record of `release --out` (and of --embed, the same) names the user's checkpoint, the EMA weights it
    exported, and the training command, seed and epochs; the card says so too."""
    data, checkpoint = modern_run
    with use_manifest(tmp_path / 'manifest.json'):
        assert main(['release', NAME, '--checkpoint', str(checkpoint), '--data', str(data), '--split', 'validation',
                     '--out', str(tmp_path / 'out')]) == 0
    provenance = json.loads((tmp_path / 'out' / 'srm_zoo_release.json').read_text())['provenance']
    assert provenance['checkpoint_sha256'] == file_sha256(checkpoint)
    assert (provenance['weights'], provenance['recipe'], provenance['seed'], provenance['epochs']) == (
        'EMA', 'modern', 0, 1)
    assert provenance['command'].startswith('srm-zoo train --model srm_resnet20_cifar --data DATA --recipe modern ')
    assert provenance['trained_with'].startswith(f'srm_zoo {srm_zoo.__version__}, timm {timm.__version__}, '
                                                 f'torch {torch.__version__}, ')
    card = (tmp_path / 'out' / 'README.md').read_text()
    assert '- weights: EMA\n' in card and f'- checkpoint_sha256: {file_sha256(checkpoint)}\n' in card
    assert f'- trained_with: {provenance["trained_with"]}\n' in card
    embedded = embed_release(NAME, str(checkpoint), str(data), 'validation', weights_dir=tmp_path / 'weights')
    assert embedded.provenance == provenance


def test_release_records_the_epochs_a_stopped_run_completed(tmp_path):
    """A train checkpoint saved after 3 of the recipe's 20 epochs (a stopped run) is recorded as 3 epochs."""
    checkpoint = tmp_path / 'checkpoint.pth'
    make_training_checkpoint(checkpoint, NAME, 'srm')
    saved = torch.load(checkpoint, weights_only=True)
    assert saved['config']['epochs'] is None and get_recipe(saved['config']['recipe']).epochs == 20
    torch.save(dict(saved, epoch=3), checkpoint)
    assert weights_provenance(read_checkpoint(checkpoint), False, 'digits')['epochs'] == 3


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
