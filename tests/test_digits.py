"""The embedded sklearn-digits model: its data, its shipped weights and its manifest entry."""
import json
import shutil

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from srm_zoo.catalogue import get_entry
from srm_zoo.cli import main
from srm_zoo.manifest import find_release
from srm_zoo.releasing import embed_release
from srm_zoo.checkpoint import file_sha256

NAME = 'srm_resnet20_cifar.sklearn_digits'
EVAL = ['eval', '--model', NAME, '--workers', '0', '--device', 'cpu']


@pytest.fixture(scope='module')
def digits_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('digits')
    assert main(['digits', '--out', str(root)]) == 0
    return root


def test_digits_folder_is_the_documented_split(digits_root, tmp_path, capsys):
    from sklearn.datasets import load_digits

    description = json.loads((digits_root / 'digits.json').read_text())
    assert description['num_images'] == {'train': 1437, 'test': 360}
    digits = load_digits()
    test_per_class = [len(list((digits_root / 'test' / str(d)).glob('*.png'))) for d in range(10)]
    train_per_class = [len(list((digits_root / 'train' / str(d)).glob('*.png'))) for d in range(10)]
    assert sum(test_per_class) == 360 and sum(train_per_class) == 1437
    for digit, count in enumerate(test_per_class):  # stratified: 20% of every digit
        assert abs(count - 0.2 * (digits.target == digit).sum()) < 1
    names = {p.name for p in digits_root.glob('*/*/*.png')}
    assert len(names) == 1797  # every scan exactly once, named by its index
    # a file holds its scan: 0..16 scaled to 0..255, upscaled 8x8 -> 32x32, RGB with equal channels
    index = int(sorted((digits_root / 'test' / '7').glob('*.png'))[0].stem)
    assert digits.target[index] == 7
    pixels = np.asarray(Image.open(digits_root / 'test' / '7' / f'{index:04d}.png'))
    assert pixels.shape == (32, 32, 3) and (pixels[..., 0] == pixels[..., 2]).all()
    expected = Image.fromarray(np.rint(digits.images[index] * 255 / 16).astype(np.uint8)).resize((32, 32), Image.BILINEAR)
    assert (pixels[..., 0] == np.asarray(expected)).all()
    # the tag's normalisation is the training split's statistics
    cfg = get_entry(NAME).get_tag('sklearn_digits').cfg
    assert tuple(description['mean']) == cfg['mean'] and tuple(description['std']) == cfg['std']
    # rewriting the same folder is allowed, writing into a foreign non-empty one is refused
    assert main(['digits', '--out', str(digits_root)]) == 0
    foreign = tmp_path
    (foreign / 'keep.txt').write_text('user data')
    assert main(['digits', '--out', str(foreign)]) == 2
    assert 'not empty' in capsys.readouterr().err and (foreign / 'keep.txt').read_text() == 'user data'


def test_digits_out_naming_a_file_is_refused(tmp_path, capsys):
    afile = tmp_path / 'afile'
    afile.write_text('user data')
    for out, message in ((afile, f"--out '{afile}' is a file; name a folder to write into."),
                         (afile / 'sub', f"--out '{afile / 'sub'}' cannot be created: '{afile}' is a file, not a folder.")):
        assert main(['digits', '--out', str(out)]) == 2
        err = capsys.readouterr().err
        assert f'error: {message}' in err and err.count('\n') == 1
    assert (tmp_path / 'afile').read_text() == 'user data'


def test_digits_out_that_only_looks_like_a_digits_folder_is_left_alone(digits_root, tmp_path, capsys):
    """A folder with a digits.json of another making, or with the real one beside a split of other classes, holds
    someone's data: refused, and left as it was."""
    for marker in ('{}', (digits_root / 'digits.json').read_text()):
        mine = tmp_path / f'mine{len(marker)}'
        (mine / 'train' / 'cats').mkdir(parents=True)
        (mine / 'train' / 'cats' / '1.jpg').write_text('a cat')
        (mine / 'digits.json').write_text(marker)
        assert main(['digits', '--out', str(mine)]) == 2
        assert 'it is not a digits folder written by srm-zoo' in capsys.readouterr().err
        assert (mine / 'train' / 'cats' / '1.jpg').read_text() == 'a cat' and not (mine / 'test').exists()


def test_digits_rewrite_keeps_other_files_and_writes_through_dot_and_links(digits_root, tmp_path, monkeypatch):
    """Rewriting a digits folder replaces only what the command writes (an evaluation's results beside them
    stay); `--out .` writes into the working folder and `--out LINK` into the linked folder, leaving the link."""
    results = digits_root / 'results.json'
    results.write_text('{"top1": 99.1667}')
    assert main(['digits', '--out', str(digits_root)]) == 0
    assert results.read_text() == '{"top1": 99.1667}'
    assert sorted(p.name for p in digits_root.iterdir()) == ['digits.json', 'results.json', 'test', 'train']
    results.unlink()  # the folder is shared with other tests
    here, target, link = tmp_path / 'here', tmp_path / 'target', tmp_path / 'link'
    for folder in (here, target):
        folder.mkdir()
    link.symlink_to(target, target_is_directory=True)
    monkeypatch.chdir(here)
    assert main(['digits', '--out', '.']) == 0 and main(['digits', '--out', str(link)]) == 0
    assert link.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ['here', 'link', 'target']
    for folder in (here, target):
        assert sorted(p.name for p in folder.iterdir()) == ['digits.json', 'test', 'train']
        assert len(list(folder.rglob('*.png'))) == 1797


def test_interrupted_digits_leave_nothing_half_written(digits_root, tmp_path, monkeypatch):
    """The folder is written aside and renamed into place when complete: Ctrl-C leaves no partial folder
    (a new one is not created, an existing one is kept whole) and no temporary sibling."""
    import srm_zoo.datasets.digits as digits

    real_to_image, calls = digits._to_image, []

    def interrupted_after_50(scan):
        calls.append(1)
        if len(calls) > 50:
            raise KeyboardInterrupt
        return real_to_image(scan)

    monkeypatch.setattr(digits, '_to_image', interrupted_after_50)
    before = sorted(p.relative_to(digits_root) for p in digits_root.rglob('*'))
    for out in (tmp_path / 'new', digits_root):
        calls.clear()
        siblings = set(out.parent.iterdir())
        assert main(['digits', '--out', str(out)]) == 130 and len(calls) == 51
        assert set(out.parent.iterdir()) == siblings  # no temporary folder left behind
    assert not (tmp_path / 'new').exists()
    assert sorted(p.relative_to(digits_root) for p in digits_root.rglob('*')) == before


def test_shipped_weights_reach_the_manifest_accuracy(digits_root):
    release = find_release('srm_resnet20_cifar', 'sklearn_digits')
    assert release is not None and release.embedded == NAME
    weights = release.embedded_dir / release.filename
    assert file_sha256(weights) == release.sha256
    model = timm.create_model(NAME, pretrained=True).eval()
    assert model.pretrained_cfg['file'] == str(weights)
    # an evaluation written here, independently of srm_zoo.releasing: timm's eval transform, PIL loading
    transform = create_transform(**resolve_data_config(model=model), is_training=False)
    files = sorted((digits_root / 'test').glob('*/*.png'))
    images = torch.stack([transform(Image.open(f).convert('RGB')) for f in files])
    targets = torch.tensor([int(f.parent.name) for f in files])
    with torch.no_grad():
        logits = torch.cat([model(chunk) for chunk in images.split(128)])
    top5 = logits.topk(5, dim=1).indices
    metric = release.metrics[0]
    assert (metric.dataset, metric.split, metric.num_images) == ('sklearn-digits', 'test', len(files))
    assert metric.top1 == round(100.0 * (top5[:, 0] == targets).sum().item() / len(files), 4)
    assert metric.top5 == round(100.0 * (top5 == targets[:, None]).any(dim=1).sum().item() / len(files), 4)
    assert metric.eval_settings == {'img_size': 32, 'crop_pct': 1.0, 'interpolation': 'bilinear'}
    assert release.provenance['recipe'] == 'digits' and set(release.provenance['comparison']) == {'srm', 'se', 'none'}


def test_release_reproduces_the_shipped_entry(digits_root, tmp_path):
    shipped = find_release('srm_resnet20_cifar', 'sklearn_digits')
    again = embed_release(NAME, str(shipped.embedded_dir / shipped.filename), str(digits_root), 'test',
                          weights_dir=tmp_path)
    assert again.sha256 == shipped.sha256
    assert again.metrics == shipped.metrics
    assert json.loads((tmp_path / NAME / 'config.json').read_text())['label_names'] == list('0123456789')


def test_srm_zoo_eval_verifies_the_shipped_model(digits_root, tmp_path, capsys):
    """The demo's check: `srm-zoo eval --verify` on the shipped model passes with the manifest's figures, even
    at --tolerance 0 (357/360 is compared as recorded, 99.1667)."""
    results = tmp_path / 'digits.json'
    code = main(['eval', '--model', 'srm_resnet20_cifar.sklearn_digits', '--data', str(digits_root), '--verify',
                 '--tolerance', '0', '--workers', '0', '--results-file', str(results)])
    assert code == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert 'PASS' in out
    assert 'top1        99.167     99.167   +0.000  ok' in out  # 99.16666... vs 99.1667: no '-0.000'
    assert 'preprocessed the images otherwise' not in out
    measured = json.loads(results.read_text())
    metric = find_release('srm_resnet20_cifar', 'sklearn_digits').metrics[0]
    assert (measured['dataset'], measured['split']) == (metric.dataset, metric.split)
    assert measured['num_images'] == metric.num_images
    assert round(measured['top1'], 4) == metric.top1 and round(measured['top5'], 4) == metric.top5


def test_verify_names_preprocessing_other_than_the_reference_s(digits_root, tmp_path, capsys):
    """A --verify run at another image size and interpolation than the manifest's figures were measured with says
    so beside its verdict (and records it), so that a shortfall is not taken for the weights'."""
    results = tmp_path / 'other.json'
    main(['eval', '--model', NAME, '--data', str(digits_root), '--verify', '--img-size', '24', '--interpolation',
          'bicubic', '--workers', '0', '--results-file', str(results)])
    out = capsys.readouterr().out
    assert ('note: this run preprocessed the images otherwise than the reference: img_size 24 (reference 32), '
            'interpolation bicubic (reference bilinear)') in out
    assert json.loads(results.read_text())['verify']['other_settings'] == [
        'img_size 24 (reference 32)', 'interpolation bicubic (reference bilinear)']


def _test_subset(digits_root, out, per_class=3, sixteen_bit=False):
    """The first ``per_class`` test images of every digit under ``out/test``, as 16-bit greys (value * 257)
    with ``sixteen_bit``."""
    for digit in range(10):
        (out / 'test' / str(digit)).mkdir(parents=True)
        for source in sorted((digits_root / 'test' / str(digit)).glob('*.png'))[:per_class]:
            image = Image.open(source)
            if sixteen_bit:
                image = Image.fromarray(np.asarray(image.convert('L')).astype(np.uint16) * 257)
                assert image.mode == 'I;16'
            image.save(out / 'test' / str(digit) / source.name)
    return out


def _eval_json(data, results, *extra):
    assert main([*EVAL, '--data', str(data), '--results-file', str(results), *extra]) == 0
    return json.loads(results.read_text())


def test_sixteen_bit_images_score_as_their_eight_bit_originals(digits_root, tmp_path):
    """16-bit PNGs are scaled to 8 bits (PIL's convert('RGB') alone would clip most pixels to white)."""
    eight = _eval_json(_test_subset(digits_root, tmp_path / 'eight'), tmp_path / 'eight.json')
    sixteen = _eval_json(_test_subset(digits_root, tmp_path / 'sixteen', sixteen_bit=True), tmp_path / 'sixteen.json')
    assert eight['num_images'] == sixteen['num_images'] == 30 and eight['top1'] == 100.0
    assert (sixteen['top1'], sixteen['top5']) == (eight['top1'], eight['top5'])
    assert sixteen['loss'] == pytest.approx(eight['loss'], rel=1e-6)


def test_verify_on_a_subset_is_incomplete(digits_root, tmp_path, capsys):
    """30 of the 360 test images score 100 top-1 but cannot verify the model: INCOMPLETE, exit 1. Given as
    --data, their folder `test` is the test split."""
    results = tmp_path / 'subset.json'
    assert main([*EVAL, '--data', str(_test_subset(digits_root, tmp_path / 'subset') / 'test'), '--verify',
                 '--results-file', str(results)]) == 1
    out = capsys.readouterr().out
    assert 'the reference was measured on 360 images, this run on 30' in out and 'INCOMPLETE' in out
    record = json.loads(results.read_text())
    verify = record['verify']
    assert (verify['verdict'], verify['passed'], verify['num_images'], verify['reference_num_images']) == (
        'INCOMPLETE', False, 30, 360)
    assert record['split'] == verify['split'] == 'test'


@pytest.mark.parametrize('extra, message', [
    (['--verify'], '--verify: no reference accuracy for srm_resnet20_cifar.sklearn_digits on sklearn-digits/train'),
    (['--split', 'test'], 'is the train split (by its name), not test: leave --split out, or give --data the test '
                          'split.'),
])
def test_training_folder_given_as_data_is_the_train_split(digits_root, capsys, extra, message):
    """`--data DIGITS/train` is the train split: not verified against the test figure, nor recorded as
    another split."""
    assert main([*EVAL, '--data', str(digits_root / 'train'), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1 and 'eval: batch' not in err


def test_release_to_a_hub_folder(digits_root, tmp_path, capsys):
    """`srm-zoo release --out`: measured, exported as a Hub repository folder, ready for `srm-zoo publish`."""
    shipped = find_release('srm_resnet20_cifar', 'sklearn_digits')
    out = tmp_path / 'hub'
    assert main(['release', NAME, '--checkpoint', str(shipped.embedded_dir / 'model.safetensors'),
                 '--data', str(digits_root), '--out', str(out), '--cards', str(tmp_path / 'cards')]) == 0
    assert f'srm-zoo publish {out}' in capsys.readouterr().out
    record = json.loads((out / 'srm_zoo_release.json').read_text())
    assert record['sha256'] == shipped.sha256 == file_sha256(out / 'model.safetensors')
    metric = record['metrics'][0]
    assert (metric['top1'], metric['top5'], metric['num_images']) == (
        shipped.metrics[0].top1, shipped.metrics[0].top5, shipped.metrics[0].num_images)
    assert 'model-index' in (out / 'README.md').read_text()
    assert main(['release', NAME, '--checkpoint', str(shipped.embedded_dir / 'model.safetensors'),
                 '--data', str(digits_root)]) == 2
    damaged = tmp_path / 'damaged'  # timm's dataset would score the next image in its place
    shutil.copytree(digits_root, damaged)
    bad = sorted((damaged / 'test' / '3').iterdir())[0]
    bad.write_bytes(b'not a png')
    assert main(['release', NAME, '--checkpoint', str(shipped.embedded_dir / 'model.safetensors'),
                 '--data', str(damaged), '--out', str(tmp_path / 'hub2'), '--cards', str(tmp_path / 'cards')]) == 2
    assert f"1 of the 360 images of split 'test' cannot be read, e.g. {bad}" in capsys.readouterr().err
    assert not (tmp_path / 'hub2').exists()


def test_release_takes_a_plain_state_dict_and_refuses_unknown_names(digits_root, tmp_path, capsys):
    """A torch state dict saved as .pth (not a training checkpoint) is a weights file too; an unknown
    model or tag is a clear error, not a traceback."""
    shipped = find_release('srm_resnet20_cifar', 'sklearn_digits')
    model = timm.create_model(NAME, pretrained=True)
    weights = tmp_path / 'weights.pth'
    torch.save(model.state_dict(), weights)
    out = tmp_path / 'hub'
    assert main(['release', NAME, '--checkpoint', str(weights), '--data', str(digits_root), '--out', str(out),
                 '--cards', str(tmp_path / 'cards')]) == 0
    record = json.loads((out / 'srm_zoo_release.json').read_text())
    assert record['sha256'] == shipped.sha256 and record['provenance']['source'] == 'weights file weights.pth'
    for name, expected in (('srm_resnet51.sklearn_digits', "Unknown model 'srm_resnet51.sklearn_digits'"),
                           ('srm_resnet20_cifar.nope', "has no tag 'nope'")):
        for where in (['--embed'], ['--out', str(tmp_path / 'other')]):
            assert main(['release', name, '--checkpoint', str(weights), '--data', str(digits_root), *where]) == 2
            assert expected in capsys.readouterr().err
    # a split without its folder would measure every image under --data, training images included
    assert main(['release', NAME, '--checkpoint', str(weights), '--data', str(digits_root), '--split', 'valid',
                 '--out', str(tmp_path / 'other')]) == 2
    assert "No folder for split 'valid'" in capsys.readouterr().err and not (tmp_path / 'other').exists()

