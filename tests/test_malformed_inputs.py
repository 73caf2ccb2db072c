"""Malformed input files (not UTF-8, random bytes, empty, broken JSON) are one-line user errors naming the file,
never tracebacks: ImageNet ground truth, the release manifest, checkpoints and the README of `srm-zoo cards`."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import timm
import torch
from PIL import Image

from srm_zoo import manifest as manifest_module
from srm_zoo.cli import main


NOT_UTF8 = b'\xff\xfe\xfa not utf-8\n'
RANDOM_BYTES = np.random.default_rng(0).bytes(256)


def one_line_error(capsys, command: str) -> str:
    """The error the CLI printed: exactly one line, no traceback."""
    err = capsys.readouterr().err
    assert err.startswith(f'srm-zoo {command}: error: ') and err.count('\n') == 1, err
    return err


# --- flat ImageNet ground truth: --labels and --meta ---

@pytest.fixture(scope='module')
def flat_eval(tmp_path_factory):
    """(eval arguments without --labels, folder): a 1000-class checkpoint and a flat folder of one validation image."""
    tmp = tmp_path_factory.mktemp('flat-eval')
    checkpoint = tmp / 'model.pth'
    torch.save(timm.create_model('srm_resnet20_cifar', num_classes=1000).state_dict(), checkpoint)
    (tmp / 'flat').mkdir()
    Image.new('RGB', (8, 8), (90, 120, 30)).save(tmp / 'flat' / 'ILSVRC2012_val_00000001.JPEG')
    args = ['eval', '--model', 'srm_resnet20_cifar.cifar10', '--num-classes', '1000', '--img-size', '32',
            '--workers', '0', '--checkpoint', str(checkpoint), '--data', str(tmp / 'flat'),
            '--results-file', str(tmp / 'out.json')]
    return args, tmp


def write_meta(path: Path, ids, wnids) -> Path:
    """A devkit meta.mat whose leaf synsets have ILSVRC2012 ``ids`` and ``wnids``."""
    table = np.empty((len(ids),), dtype=[('ILSVRC2012_ID', 'O'), ('WNID', 'O'), ('num_children', 'O')])
    for row, (synset_id, wnid) in enumerate(zip(ids, wnids)):
        table[row] = (synset_id, wnid, 0)
    scipy.io.savemat(path, {'synsets': table})
    return path


def test_labels_csv_that_is_not_utf8(flat_eval, tmp_path, capsys):
    args, _ = flat_eval
    labels = tmp_path / 'LOC_val_solution.csv'
    labels.write_bytes(b'ImageId,PredictionString\n' + NOT_UTF8)
    assert main([*args, '--labels', str(labels)]) == 2
    err = one_line_error(capsys, 'eval')
    assert f'error: {labels} is not a LOC_val_solution.csv: expected ImageId,PredictionString rows like ' in err
    assert 'as UTF-8 text (' in err


def test_labels_txt_that_is_not_utf8(flat_eval, tmp_path, capsys):
    args, _ = flat_eval
    labels = tmp_path / 'ILSVRC2012_validation_ground_truth.txt'
    labels.write_bytes(NOT_UTF8)
    meta = write_meta(tmp_path / 'meta.mat', [1, 2], ['n01440764', 'n01443537'])
    assert main([*args, '--labels', str(labels), '--meta', str(meta)]) == 2
    err = one_line_error(capsys, 'eval')
    assert (f'error: {labels} is not an ILSVRC2012 devkit ground truth (ILSVRC2012_validation_ground_truth.txt: '
            'one ILSVRC2012 ID per line, as UTF-8 text): ') in err
    assert 'Pass that file or a LOC_val_solution.csv with --labels.' in err


@pytest.mark.parametrize('meta, reason', [
    ('random_bytes', 'Unknown mat file type'),
    ('not_a_struct', 'only integers, slices'),  # a "synsets" variable that is a plain array
    ('one_synset', 'iteration over a 0-d array'),  # scipy squeezes a struct of one synset to a scalar
    ('non_integer_id', "invalid literal for int() with base 10: 'x'"),
    ('matlab_7_3', 'Please use HDF reader for matlab v7.3 files'),
])
def test_meta_that_is_not_a_devkit_meta_mat(flat_eval, tmp_path, capsys, meta, reason):
    args, _ = flat_eval
    path = tmp_path / 'meta.mat'
    if meta == 'random_bytes':
        path.write_bytes(RANDOM_BYTES)
    elif meta == 'not_a_struct':
        scipy.io.savemat(path, {'synsets': np.arange(3)})
    elif meta == 'one_synset':
        write_meta(path, [1], ['n01440764'])
    elif meta == 'non_integer_id':
        write_meta(path, [1, 'x'], ['n01440764', 'n01443537'])
    else:  # an HDF5 file behind MATLAB's 7.3 header
        path.write_bytes(b'MATLAB 7.3 MAT-file'.ljust(124) + b'\x00\x02IM' + RANDOM_BYTES)
    (tmp_path / 'truth.txt').write_text('1\n')
    assert main([*args, '--labels', str(tmp_path / 'truth.txt'), '--meta', str(path)]) == 2
    err = one_line_error(capsys, 'eval')
    assert (f'error: {path} is not an ILSVRC2012 devkit meta.mat (a "synsets" struct with ILSVRC2012_ID, WNID '
            f'and num_children): ') in err and reason in err


# --- the release manifest ---

NO_RELEASES = 'it has no "releases" list'
BROKEN_MANIFESTS = {
    'random_bytes': (RANDOM_BYTES, 'it is not UTF-8 text'),
    'invalid_json': (b'{"releases": [', 'it is not valid JSON (Expecting value: line 1 column 15 (char 14))'),
    'no_releases': (b'{}', NO_RELEASES),
    'a_list': (b'[]', NO_RELEASES),
    'bad_entry': (b'{"releases": [{"model": "x"}]}',
                  "its release 1 is not a release entry (Release.__init__() missing 3 required positional "
                  "arguments: 'tag', 'sha256', and 'provenance')"),
}


def manifest_error(path: Path, problem: str) -> str:
    return (f'The release manifest {path} is broken: {problem}. Restore it (a JSON object with a "releases" list, '
            'as `srm-zoo publish` writes it), or select another manifest (SRM_ZOO_MANIFEST, --manifest).')


@pytest.mark.parametrize('broken', sorted(BROKEN_MANIFESTS))
def test_list_with_a_broken_manifest(tmp_path, capsys, monkeypatch, broken):
    content, problem = BROKEN_MANIFESTS[broken]
    path = tmp_path / 'manifest.json'
    path.write_bytes(content)
    monkeypatch.setattr(manifest_module, '_active_path', path)  # what SRM_ZOO_MANIFEST sets at import
    assert main(['list']) == 2
    err = one_line_error(capsys, 'list')
    assert err == f'srm-zoo list: error: {manifest_error(path, problem)}\n'


def test_broken_manifest_named_by_the_environment(tmp_path):
    """SRM_ZOO_MANIFEST is read when srm_zoo is imported, which registers the models with timm: the import gets
    through and the command reports the broken manifest."""
    path = tmp_path / 'manifest.json'
    path.write_bytes(b'{}')
    result = subprocess.run([sys.executable, '-m', 'srm_zoo', 'list'], capture_output=True, text=True,
                            env=dict(os.environ, SRM_ZOO_MANIFEST=str(path)), timeout=120)
    assert result.returncode == 2
    assert result.stderr == f'srm-zoo list: error: {manifest_error(path, NO_RELEASES)}\n'


# --- checkpoints ---

@pytest.fixture
def digits_data(tmp_path):
    """A class folder of one image, for `srm-zoo eval --model srm_resnet20_cifar.sklearn_digits`."""
    (tmp_path / 'data' / '0').mkdir(parents=True)
    Image.new('RGB', (8, 8)).save(tmp_path / 'data' / '0' / 'a.png')
    return tmp_path / 'data'


def eval_checkpoint(checkpoint: Path, data: Path) -> int:
    return main(['eval', '--model', 'srm_resnet20_cifar.sklearn_digits', '--checkpoint', str(checkpoint),
                 '--data', str(data), '--workers', '0'])


@pytest.mark.parametrize('content, reason', [
    (RANDOM_BYTES, '; UnpicklingError: Unsupported operand 95).'),
    (b'\xff' * 64, '; UnpicklingError: Unsupported operand 255).'),
    (b'not a checkpoint\n', '; UnpicklingError: Unsupported operand 110).'),
], ids=['random_bytes', 'ff_bytes', 'text'])
def test_checkpoint_of_junk_is_not_a_readable_checkpoint(digits_data, tmp_path, capsys, content, reason):
    checkpoint = tmp_path / 'junk.pth'
    checkpoint.write_bytes(content)
    assert eval_checkpoint(checkpoint, digits_data) == 2
    err = one_line_error(capsys, 'eval')
    assert (f"error: Cannot read checkpoint '{checkpoint}': it is not a readable PyTorch checkpoint (corrupt, or a "
            f'file of another format{reason}\n') in err
    assert 'Python objects' not in err


def test_empty_checkpoint(digits_data, tmp_path, capsys):
    checkpoint = tmp_path / 'empty.pth'
    checkpoint.write_bytes(b'')
    assert eval_checkpoint(checkpoint, digits_data) == 2
    assert one_line_error(capsys, 'eval') == (f"srm-zoo eval: error: Checkpoint '{checkpoint}' is empty (0 bytes), not "
                                              'a PyTorch checkpoint; save or copy it again.\n')


# --- the README of `srm-zoo cards` ---

def test_cards_leaves_an_undecodable_default_readme_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path('README.md').write_bytes(NOT_UTF8)
    assert main(['cards', '--out', str(tmp_path / 'cards'), '--check']) == 1  # no cards yet, and no table to check
    captured = capsys.readouterr()
    assert captured.err == '' and captured.out.startswith(f'There are no model cards in {tmp_path / "cards"}')
    assert Path('README.md').read_bytes() == NOT_UTF8


def test_cards_refuses_an_undecodable_readme_it_is_given(tmp_path, capsys):
    readme = tmp_path / 'README.md'
    readme.write_bytes(NOT_UTF8)
    assert main(['cards', '--out', str(tmp_path / 'cards'), '--readme', str(readme)]) == 2
    err = one_line_error(capsys, 'cards')
    assert err.startswith(f'srm-zoo cards: error: --readme {readme}: it cannot be read as text (')
    assert 'name the README that holds the zoo table markers' in err and readme.read_bytes() == NOT_UTF8
