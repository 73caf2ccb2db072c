"""``srm-zoo eval`` on small image sets written to disk, checked against a plain computation."""
import argparse
import csv
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from srm_zoo.cli import main
from srm_zoo.evaluation import label_space
from srm_zoo.evaluation.data import canonical_split, to_rgb
from srm_zoo.manifest import Metric, Release

from eval_helpers import (IMG_SIZE, CROP_PCT, imagenet_synsets, make_model, place, plain_logits, plain_scores,
                          ranked_targets, real_label_table, timm_index_file, write_images)

NUM_IMAGES = 12
MODEL_ARGS = ['--model', 'srm_resnet20_cifar.cifar10', '--num-classes', '1000', '--img-size', str(IMG_SIZE),
              '--crop-pct', str(CROP_PCT), '--workers', '0', '--batch-size', '5']


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def zoo(tmp_path_factory):
    """Random 1000-class model, its checkpoint, 12 JPEGs, their plain logits and ranked labels."""
    tmp = tmp_path_factory.mktemp('eval')
    model, checkpoint = make_model(tmp)
    files = write_images(tmp / 'pool', NUM_IMAGES)
    logits = plain_logits(model, files)
    return dict(tmp=tmp, model=model, checkpoint=checkpoint, files=files, logits=logits,
                targets=ranked_targets(logits))


def run_eval(zoo, data, *extra, expect=0, name='out.json'):
    out = Path(zoo['tmp']) / name
    code = main(['eval', *MODEL_ARGS, '--checkpoint', str(zoo['checkpoint']), '--data', str(data),
                 '--results-file', str(out), *extra])
    assert code == expect
    return json.loads(out.read_text()) if out.suffix == '.json' and code in (0, 1) else out


def assert_matches(result, expected):
    assert result['num_images'] == expected['num_images']
    assert result['top1'] == pytest.approx(expected['top1'], abs=1e-3)
    assert result['top5'] == pytest.approx(expected['top5'], abs=1e-3)
    assert result['loss'] == pytest.approx(expected['loss'], rel=1e-4)


def test_partial_synset_tree_under_split_folder(zoo, tmp_path, capsys):
    synsets = imagenet_synsets()
    root = place(zoo['files'], [synsets[t] for t in zoo['targets']], tmp_path / 'imagenet' / 'val')
    (tmp_path / 'imagenet' / 'train').mkdir()  # must not be picked for evaluation
    result = run_eval(zoo, tmp_path / 'imagenet')
    expected = plain_scores(zoo['logits'], zoo['targets'])
    assert expected['top1'] == pytest.approx(100 * 4 / 12) and expected['top5'] == pytest.approx(100 * 8 / 12)
    assert_matches(result, expected)
    assert result['dataset'] == 'imagenet-1k' and result['split'] == 'validation'
    assert result['data'] == str(root)
    assert (result['img_size'], result['crop_pct'], result['interpolation']) == (32, 0.875, 'bilinear')
    assert result['checkpoint_sha256'] == __import__('hashlib').sha256(zoo['checkpoint'].read_bytes()).hexdigest()
    assert result['versions']['timm'] and result['samples_per_sec'] > 0
    err = capsys.readouterr().err
    assert 'crop_pct=0.875' in err  # the effective preprocessing is printed
    assert 'eval: batch 3/3, 12 images, running top-1 33.33' in err  # plain progress lines off a terminal


def test_class_folders_at_root_and_csv_row_as_recorded(zoo, tmp_path, capsys):
    """The CSV row and the summary line hold the recorded 4-decimal figures (top-1 4/12, top-5 8/12), not
    those figures rounded again."""
    synsets = imagenet_synsets()
    place(zoo['files'], [synsets[t] for t in zoo['targets']], tmp_path / 'sketch')
    out = run_eval(zoo, tmp_path / 'sketch', '--dataset', 'imagenet-sketch', name='out.csv')
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ['model', 'img_size', 'top1', 'top1_err', 'top5', 'top5_err', 'param_count',
                             'crop_pct', 'interpolation']
    expected = plain_scores(zoo['logits'], zoo['targets'])
    assert float(rows[0]['top1']) == pytest.approx(expected['top1'], abs=1e-3)
    assert float(rows[0]['top5_err']) == pytest.approx(100 - expected['top5'], abs=1e-3)
    assert [rows[0][c] for c in ('top1', 'top1_err', 'top5', 'top5_err')] == ['33.3333', '66.6667', '66.6667',
                                                                               '33.3333']
    assert 'top-1 33.3333  top-5 66.6667  loss ' in capsys.readouterr().out


def test_compiled_evaluation_gives_the_plain_scores(zoo, tmp_path, capsys):
    """--compile with --compile-mode reduce-overhead (CUDA graphs on a GPU; on the CPU Inductor alone,
    which the log reports) scores as the plain model does, over batches of 5, 5 and 2, and the results
    record the mode."""
    synsets = imagenet_synsets()
    place(zoo['files'], [synsets[t] for t in zoo['targets']], tmp_path / 'data')
    result = run_eval(zoo, tmp_path / 'data', '--compile', '--compile-mode', 'reduce-overhead', name='compiled.json')
    assert_matches(result, plain_scores(zoo['logits'], zoo['targets']))
    assert result['compile'] is True and result['compile_mode'] == 'reduce-overhead'
    assert 'compiled graphs run without CUDA graphs: ' in capsys.readouterr().err


def test_throughput_leaves_out_compilation(zoo, tmp_path, monkeypatch):
    """Warm-up passes of each batch shape run before the timed loop: a compiled model whose first call
    with each shape takes 1.5 s (as compiling does) still evaluates 12 tiny images in well under 1.5 s."""
    shapes = []

    def slow_compile(model, mode=None):
        def forward(batch):
            if tuple(batch.shape) not in shapes:
                time.sleep(1.5)
            shapes.append(tuple(batch.shape))
            return model(batch)
        return forward

    monkeypatch.setattr(torch, 'compile', slow_compile)
    synsets = imagenet_synsets()
    root = place(zoo['files'], [synsets[t] for t in zoo['targets']], tmp_path / 'data')
    result = run_eval(zoo, root, '--compile', name='warm.json')
    assert [shape[0] for shape in shapes] == [5, 2, 5, 5, 2]  # warm-up: a full batch and the last one
    assert result['eval_seconds'] < 1.4 and result['samples_per_sec'] > 12 / 1.4
    assert_matches(result, plain_scores(zoo['logits'], zoo['targets']))


def _flat_names(count):
    return [f'ILSVRC2012_val_{101 + 7 * i:08d}.JPEG' for i in range(count)]


def test_flat_folder_with_devkit_ground_truth(zoo, tmp_path):
    """The devkit's ILSVRC2012 IDs are a different order than sorted synsets; meta.mat maps them."""
    synsets = imagenet_synsets()
    ids = np.random.default_rng(1).permutation(1000) + 1  # synset k has ILSVRC2012 ID ids[k]
    val = place(zoo['files'], [''] * NUM_IMAGES, tmp_path / 'val', _flat_names(NUM_IMAGES))
    devkit = tmp_path / 'ILSVRC2012_devkit_t12' / 'data'
    devkit.mkdir(parents=True)
    table = np.empty((1002,), dtype=[('ILSVRC2012_ID', 'O'), ('WNID', 'O'), ('num_children', 'O')])
    for k, synset in enumerate(synsets):
        table[k] = (int(ids[k]), synset, 0)
    table[1000], table[1001] = (1001, 'n00001740', 3), (1002, 'n00002137', 2)  # non-leaf synsets are ignored
    scipy.io.savemat(devkit / 'meta.mat', {'synsets': table})
    lines = ['1'] * 50000
    for i, target in enumerate(zoo['targets']):
        lines[101 + 7 * i - 1] = str(ids[target])
    (devkit / 'ILSVRC2012_validation_ground_truth.txt').write_text('\n'.join(lines) + '\n')
    result = run_eval(zoo, tmp_path)
    assert result['data'] == str(val) and result['layout'] == 'folder-flat'
    assert_matches(result, plain_scores(zoo['logits'], zoo['targets']))


@pytest.mark.parametrize('meta, message', [
    ('junk.mat', 'junk.mat is not an ILSVRC2012 devkit meta.mat (a "synsets" struct with ILSVRC2012_ID, WNID and '
                 'num_children): Mat file appears to be truncated'),
    ('absent.mat', 'absent.mat does not exist or is not a file.'),
])
def test_bad_meta_file(zoo, tmp_path, capsys, meta, message):
    flat = place(zoo['files'][:2], ['', ''], tmp_path / 'flat', _flat_names(2))
    (tmp_path / 'truth.txt').write_text('1\n' * 200)
    (tmp_path / 'junk.mat').write_bytes(b'hello')
    run_eval(zoo, flat, '--labels', str(tmp_path / 'truth.txt'), '--meta', str(tmp_path / meta), expect=2)
    err = capsys.readouterr().err
    assert f'error: {tmp_path / meta} ' in err or f'error: --meta {tmp_path / meta} ' in err
    assert message in err and err.count('\n') == 1


def test_meta_is_refused_where_the_ground_truth_does_not_read_it(zoo, tmp_path, capsys):
    """A LOC_val_solution.csv, given or found beside the images, names synsets itself: --meta (even junk) is
    refused rather than ignored."""
    synsets = imagenet_synsets()
    names = _flat_names(2)
    flat = place(zoo['files'][:2], ['', ''], tmp_path / 'flat', names)
    solution = tmp_path / 'LOC_val_solution.csv'  # one folder up from the images: found there
    solution.write_text('ImageId,PredictionString\n' + ''.join(
        f'{n[:-5]},{synsets[t]} 1 2 30 40\n' for n, t in zip(names, zoo['targets'])))
    (tmp_path / 'junk.mat').write_bytes(b'hello')
    for labels in ([], ['--labels', str(solution)]):
        run_eval(zoo, flat, *labels, '--meta', str(tmp_path / 'junk.mat'), expect=2)
        err = capsys.readouterr().err
        assert (f'error: --meta {tmp_path / "junk.mat"} maps the ILSVRC2012 IDs of '
                f'ILSVRC2012_validation_ground_truth.txt to synsets, but the labels come from {solution}, which '
                f'names the synsets itself; leave --meta out.') in err and err.count('\n') == 1


def test_flat_folder_with_loc_solution_csv(zoo, tmp_path):
    synsets = imagenet_synsets()
    names = _flat_names(NUM_IMAGES)
    place(zoo['files'], [''] * NUM_IMAGES, tmp_path / 'flat', names)
    solution = tmp_path / 'LOC_val_solution.csv'
    rows = [f'{n[:-5]},{synsets[t]} 1 2 30 40 {synsets[t]} 5 6 7 8' for n, t in zip(names, zoo['targets'])]
    solution.write_text('ImageId,PredictionString\n' + '\n'.join(reversed(rows)) + '\n')
    result = run_eval(zoo, tmp_path / 'flat', '--labels', str(solution))
    assert_matches(result, plain_scores(zoo['logits'], zoo['targets']))


def test_tar_archive_and_tar_shards(zoo, tmp_path):
    """A .tar of class folders (also inside one top folder) and a folder of shards (one per class, or holding
    class folders) score as the class folders do."""
    synsets = imagenet_synsets()
    tree = place(zoo['files'], [synsets[t] for t in zoo['targets']], tmp_path / 'tree')
    with tarfile.open(tmp_path / 'val.tar', 'w') as archive:
        archive.add(tree, arcname='.')
    expected = plain_scores(zoo['logits'], zoo['targets'])
    result = run_eval(zoo, tmp_path / 'val.tar')
    assert result['layout'] == 'tar'
    assert_matches(result, expected)
    shards = tmp_path / 'shards'
    shards.mkdir()
    for synset_dir in tree.iterdir():  # one tar per class, named after its synset
        with tarfile.open(shards / f'{synset_dir.name}.tar', 'w') as archive:
            for file in synset_dir.iterdir():
                archive.add(file, arcname=file.name)
    assert_matches(run_eval(zoo, shards), expected)
    with tarfile.open(tmp_path / 'wrapped.tar', 'w') as archive:  # `tar cf wrapped.tar val`: one top folder
        archive.add(tree, arcname='val')
    assert_matches(run_eval(zoo, tmp_path / 'wrapped.tar'), expected)
    class_shards = tmp_path / 'class_shards'
    class_shards.mkdir()
    with tarfile.open(class_shards / 'part0.tar', 'w') as archive:  # a shard holding class folders
        archive.add(tree, arcname='.')
    assert_matches(run_eval(zoo, class_shards), expected)


def test_imagenet_v2_folders_are_class_indices(zoo, tmp_path):
    place(zoo['files'], [str(t) for t in zoo['targets']], tmp_path / 'v2')
    result = run_eval(zoo, tmp_path / 'v2', '--dataset', 'imagenet-v2')
    assert result['dataset'] == 'imagenet-v2'
    assert_matches(result, plain_scores(zoo['logits'], zoo['targets']))


@pytest.mark.parametrize('which', ['a', 'r'])
def test_imagenet_a_r_score_the_200_class_mask(zoo, tmp_path, which):
    indices = timm_index_file(f'imagenet_{which}_indices.txt')
    masked = zoo['logits'][:, indices]
    targets = ranked_targets(masked)  # positions among the 200 classes
    synsets = imagenet_synsets()
    place(zoo['files'], [synsets[indices[t]] for t in targets], tmp_path / f'imagenet-{which}')
    result = run_eval(zoo, tmp_path / f'imagenet-{which}', '--dataset', f'imagenet-{which}')
    assert result['num_classes'] == 200
    assert_matches(result, plain_scores(masked, targets))


def test_imagenet_real_labels(zoo, tmp_path):
    table = real_label_table()
    numbers = [n for n in range(1, 400) if table[n - 1]][:NUM_IMAGES - 2] + [
        n for n in range(1, 400) if not table[n - 1]][:2]  # two images without ReaL labels are not scored
    names = [f'ILSVRC2012_val_{n:08d}.JPEG' for n in numbers]
    place(zoo['files'], [''] * NUM_IMAGES, tmp_path / 'real', names)
    result = run_eval(zoo, tmp_path / 'real', '--dataset', 'imagenet-real')
    top5 = zoo['logits'].topk(5, dim=1).indices.tolist()
    scored = [(p, table[n - 1]) for p, n in zip(top5, numbers) if table[n - 1]]
    assert result['num_images'] == NUM_IMAGES and result['num_scored'] == NUM_IMAGES - 2
    assert result['top1'] == pytest.approx(100 * sum(p[0] in s for p, s in scored) / len(scored), abs=1e-3)
    assert result['top5'] == pytest.approx(100 * sum(any(x in s for x in p) for p, s in scored) / len(scored),
                                           abs=1e-3)
    assert result['loss'] is None  # no single-label ground truth given


def test_folder_dataset_maps_label_names_indices_or_sorted_names(zoo, tmp_path):
    model, checkpoint = make_model(tmp_path, num_classes=10)
    logits = plain_logits(model, zoo['files'])
    targets = ranked_targets(logits)
    args = ['eval', '--model', 'srm_resnet20_cifar.cifar10', '--checkpoint', str(checkpoint), '--dataset', 'folder',
            '--img-size', '32', '--crop-pct', '0.875', '--workers', '0', '--results-file', str(tmp_path / 'r.json')]
    present = sorted(set(targets))
    assert len(present) < 10  # some classes have no image: their empty folders must keep their place
    for folders, expected_targets, empty in (
            ([str(t) for t in targets], targets, ()),  # numeric names are class indices
            ([f'class{t}' for t in targets], [present.index(t) for t in targets], ()),  # sorted names
            ([f'class{t}' for t in targets], targets, [f'class{t}' for t in range(10) if t not in present])):
        root = place(zoo['files'], folders, tmp_path / f'{folders[0]}{len(empty)}' / 'digits' / 'test')
        for name in empty:
            (root / name).mkdir()
        assert main(args + ['--data', str(root.parent)]) == 0
        result = json.loads((tmp_path / 'r.json').read_text())
        assert (result['dataset'], result['split']) == ('cifar10', 'test')  # the tag's dataset, the split folder
        assert_matches(result, plain_scores(logits, expected_targets))
    space = label_space('folder', 4, label_names=['cat', 'dog', 'emu', 'ant'])  # a model naming its classes
    assert space.class_to_index == {'cat': 0, 'dog': 1, 'emu': 2, 'ant': 3}


def test_corrupt_images_are_skipped_counted_and_capped(zoo, tmp_path, capsys):
    synsets = imagenet_synsets()
    folders = [synsets[t] for t in zoo['targets']]
    root = place(zoo['files'], folders, tmp_path / 'data' / 'val')
    (root / folders[0] / 'broken.JPEG').write_bytes(b'not an image at all')
    truncated = zoo['files'][1].read_bytes()
    (root / folders[1] / 'truncated.JPEG').write_bytes(truncated[:len(truncated) // 3])
    assert folders[2] != folders[0]
    (root / folders[2] / 'broken.JPEG').write_bytes(b'another file of the same name')
    result = run_eval(zoo, root.parent)
    assert result['num_bad_images'] == 3  # named by their path relative to --data
    assert sorted(result['bad_images']) == sorted(f'val/{folder}/{name}' for folder, name in (
        (folders[0], 'broken.JPEG'), (folders[1], 'truncated.JPEG'), (folders[2], 'broken.JPEG')))
    assert f'val/{folders[2]}/broken.JPEG' in capsys.readouterr().err  # the warning too
    assert_matches(result, plain_scores(zoo['logits'], zoo['targets']))
    run_eval(zoo, root.parent, '--max-bad-images', '2', expect=2)
    assert f'val/{folders[0]}/broken.JPEG' in capsys.readouterr().err


def test_verify_against_paper_and_manifest(zoo, tmp_path, monkeypatch, capsys):
    """srm_resnet32_cifar's reported figure (a third-party one, named as such) is cifar10 test top-1 92.9, on the
    10000 test images: labels equal to predictions reach it, but 12 images cannot verify it."""
    model, checkpoint = make_model(tmp_path, num_classes=10, name='srm_resnet32_cifar')
    predictions = plain_logits(model, zoo['files']).argmax(dim=1).tolist()
    root = place(zoo['files'], [str(p) for p in predictions], tmp_path / 'cifar' / 'test')
    base = ['eval', '--model', 'srm_resnet32_cifar', '--checkpoint', str(checkpoint), '--data', str(root.parent),
            '--img-size', '32', '--crop-pct', '0.875', '--workers', '0', '--verify']
    assert main(base) == 1
    out = capsys.readouterr().out
    assert 'reported (third-party' in out and 'top1       100.000     92.900   +7.100  ok' in out
    assert 'the reference was measured on 10000 images, this run on 12' in out and 'INCOMPLETE' in out
    release = Release('srm_resnet32_cifar', 'cifar10', 'x' * 64,
                      (Metric('cifar10', 'test', top1=100.0, top5=100.0, num_images=NUM_IMAGES),), {})
    monkeypatch.setattr('srm_zoo.evaluation.verify.find_release', lambda model, tag: release)
    # the manifest's measured figure is preferred to the paper's: a folder with half the labels wrong fails it
    wrong = place(zoo['files'][:6], [str((p + 1) % 10) for p in predictions[:6]], tmp_path / 'cifar2' / 'test')
    place(zoo['files'][6:], [str(p) for p in predictions[6:]], wrong)
    base[base.index(str(root.parent))] = str(wrong.parent)
    assert main(base + ['--tolerance', '0.5']) == 1
    out = capsys.readouterr().out
    assert 'release manifest' in out and 'FAIL' in out and '100.000' in out


def test_verify_without_reference_stops_before_evaluating(zoo, tmp_path, capsys):
    synsets = imagenet_synsets()
    root = place(zoo['files'], [synsets[t] for t in zoo['targets']], tmp_path / 'val')
    previous = Path(zoo['tmp']) / 'previous.json'
    previous.write_text('{"top1": 1.0}\n')
    run_eval(zoo, root, '--verify', expect=2, name='previous.json')
    err = capsys.readouterr().err
    assert 'no reference accuracy' in err and 'Traceback' not in err
    assert 'eval: batch' not in err  # nothing evaluated
    assert previous.read_text() == '{"top1": 1.0}\n'  # an earlier results file is left alone


@pytest.mark.parametrize('case, message', [
    ('folder', 'out.json: it is a folder; name a file in it, e.g. '),
    ('no_folder', 'nowhere/out.json: folder '),
    ('other_csv', 'has other columns than the results table (model,img_size,top1,'),
    ('empty', 'Cannot write results to an empty path'),
    ('format_only', '--results-format says how --results-file is written: give --results-file too.'),
])
def test_unwritable_results_file_stops_before_evaluating(zoo, tmp_path, capsys, case, message):
    synsets = imagenet_synsets()
    root = place(zoo['files'][:3], [synsets[t] for t in zoo['targets'][:3]], tmp_path / 'val')
    results = {'folder': tmp_path / 'out.json', 'no_folder': tmp_path / 'nowhere' / 'out.json',
               'other_csv': tmp_path / 'table.csv', 'empty': '', 'format_only': None}[case]
    if case == 'folder':
        results.mkdir()
    elif case == 'other_csv':
        results.write_text('a,b\n1,2\n')
    output = ['--results-format', 'csv'] if results is None else ['--results-file', str(results)]
    assert main(['eval', *MODEL_ARGS, '--checkpoint', str(zoo['checkpoint']), '--data', str(root), *output]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1 and 'eval: batch' not in err
    assert case != 'other_csv' or results.read_text() == 'a,b\n1,2\n'


def test_csv_results_are_appended_json_overwritten(zoo, tmp_path):
    """A results table grows by a row per run (header once); a JSON file holds the last run."""
    synsets = imagenet_synsets()
    root = place(zoo['files'], [synsets[t] for t in zoo['targets']], tmp_path / 'val')
    table = run_eval(zoo, root, name='table.csv')
    run_eval(zoo, root, '--img-size', '40', name='table.csv')
    rows = list(csv.DictReader(table.open()))
    assert [row['img_size'] for row in rows] == ['32', '40']
    assert float(rows[0]['top1']) == pytest.approx(plain_scores(zoo['logits'], zoo['targets'])['top1'], abs=1e-3)
    run_eval(zoo, root, name='last.json')
    assert run_eval(zoo, root, '--img-size', '40', name='last.json')['img_size'] == 40


@pytest.mark.parametrize('case, message', [
    ('missing', 'does not exist'),
    ('empty', 'empty folder'),
    ('no_images', 'No images found'),
    ('not_synsets', 'not ImageNet-1k WordNet synsets'),
    ('flat_no_truth', 'no ground truth was found'),
    ('hf_without_datasets', 'datasets'),
    ('only_train_split', 'has no validation or test split folder, only train'),
    ('labels_for_class_folders', 'absent.csv gives the labels of a flat ILSVRC2012_val_* folder, but '),
    ('nested', "val/n01443537/deeper/img001.JPEG is in a folder inside the class folder 'n01443537'"),
    ('nested_tar', "n01440764/n01443537/img001.JPEG is in a folder inside the class folder 'n01440764'"),
    ('dataset_name_for_imagenet_a', '--dataset-name names the dataset of --dataset folder data, but --dataset '
                                    'imagenet-a records and verifies imagenet-a: leave --dataset-name out.'),
    ('dataset_name_for_default_imagenet', 'but imagenet (the default for srm_resnet20_cifar.cifar10) records and '
                                          'verifies imagenet-1k: leave --dataset-name out, or add --dataset folder.'),
])
def test_bad_data(zoo, tmp_path, capsys, case, message):
    data, extra = tmp_path / 'data', []
    if case == 'empty':
        data.mkdir()
    elif case == 'no_images':
        (data / 'n01440764').mkdir(parents=True)
        (data / 'n01440764' / 'notes.txt').write_text('hello')
    elif case == 'not_synsets':
        place(zoo['files'][:2], ['cat', 'dog'], data)
    elif case == 'flat_no_truth':
        place(zoo['files'][:2], ['', ''], data, _flat_names(2))
    elif case == 'labels_for_class_folders':  # the folder names are the labels: --labels would be ignored
        place(zoo['files'][:2], imagenet_synsets()[:2], data)
        extra = ['--labels', str(tmp_path / 'absent.csv')]
    elif case == 'nested':  # timm would label the second image by 'deeper'
        place(zoo['files'][:2], ['n01440764', 'n01443537/deeper'], data / 'val')
    elif case == 'nested_tar':  # timm's tar reader, too, would label the second image by its inner folder
        place(zoo['files'][:2], ['n01440764', 'n01440764/n01443537'], data)
        with tarfile.open(tmp_path / 'nest.tar', 'w') as archive:
            archive.add(data / 'n01440764', arcname='n01440764')
        data = tmp_path / 'nest.tar'
    elif case.startswith('dataset_name_for'):  # folder data only: it would redirect --verify to another dataset
        place(zoo['files'][:2], [imagenet_synsets()[i] for i in timm_index_file('imagenet_a_indices.txt')[:2]], data)
        extra = ['--dataset-name', 'imagenet-1k', *(['--dataset', 'imagenet-a'] if case.endswith('imagenet_a') else [])]
    elif case == 'only_train_split':  # reading the root would evaluate on training images
        place(zoo['files'][:2], imagenet_synsets()[:2], data / 'train')
    elif case == 'hf_without_datasets':
        try:
            import datasets  # noqa: F401
            pytest.skip('datasets is installed')
        except ImportError:
            pass
        data = 'hfds/imagenet-1k'
    run_eval(zoo, data, *extra, expect=2)
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err
    assert err.count('\n') == 1  # one paragraph


def test_folders_not_named_as_the_models_labels(zoo, tmp_path, capsys):
    """A model with label names scores folders of those names; the fix is renaming the folders (--num-classes
    would drop the label names and the trained head)."""
    data = place(zoo['files'][:2], ['digit_0', 'digit_1'], tmp_path / 'data')
    assert main(['eval', '--model', 'srm_resnet20_cifar.sklearn_digits', '--data', str(data), '--workers', '0']) == 2
    err = capsys.readouterr().err
    assert "2 of the 2 class folders are not the model's label names (0, 1, 2" in err
    assert "Rename the class folders to the model's label names." in err and '--num-classes' not in err


def test_flat_imagenet_files_for_a_model_with_its_own_labels(zoo, tmp_path, capsys):
    """A model whose labels are not ImageNet's wants class folders; given --labels, the message names the
    --dataset that reads flat ILSVRC2012_val_* files."""
    data = place(zoo['files'][:2], ['', ''], tmp_path / 'data', _flat_names(2))
    args = ['eval', '--model', 'srm_resnet20_cifar', '--data', str(data), '--workers', '0']
    assert main([*args, '--labels', str(tmp_path / 'gt.txt')]) == 2
    assert 'found image files directly in' in (err := capsys.readouterr().err) and 'add --dataset imagenet' in err
    assert main(args) == 2
    assert 'add --dataset imagenet' not in capsys.readouterr().err


@pytest.mark.parametrize('case, message', [
    ('unknown_model', 'Did you mean: srm_resnet50'),
    ('no_weights', 'has no published weights'),
    ('class_count', 'class-count mismatch'),
    ('wrong_checkpoint', 'missing from the checkpoint'),
    ('wrong_head', 'pass --num-classes 10'),
    ('published_head', '--num-classes 12 differs from the 10 classes of the published weights'),
    ('not_a_checkpoint', 'Cannot read checkpoint'),
    ('pickled_objects', 'holds Python objects other than tensors (such as argparse.Namespace); srm-zoo loads only '
                        'weights-only checkpoints'),
    ('bad_option', '--crop-pct must be in (0, 1]'),
    ('mode_without_compile', '--compile-mode sets the mode of torch.compile: add --compile.'),
    ('tolerance_without_verify', '--tolerance says how far --verify lets the figures fall short: add --verify.'),
    ('ema_without_checkpoint', '--use-ema picks the EMA weights of a training checkpoint: add --checkpoint'),
    ('unknown_device', '--device foo: unknown device'),
    ('cuda_without_cuda', '--device cuda: CUDA is not available'),
])
def test_bad_model_or_checkpoint(zoo, tmp_path, capsys, monkeypatch, case, message):
    synsets = imagenet_synsets()
    data = place(zoo['files'][:2], synsets[:2], tmp_path / 'data')
    args = ['eval', '--data', str(data), '--workers', '0']
    if case == 'unknown_model':
        args += ['--model', 'srm_resnet5']
    elif case == 'no_weights':
        args += ['--model', 'srm_resnet50']
    elif case == 'class_count':  # a 10-class model cannot score ImageNet
        _, checkpoint = make_model(tmp_path, num_classes=10)
        args += ['--model', 'srm_resnet20_cifar', '--checkpoint', str(checkpoint), '--dataset', 'imagenet']
    elif case == 'wrong_checkpoint':
        torch.save({'state_dict': {'module.conv.weight': torch.zeros(1)}}, tmp_path / 'other.pth')
        args += ['--model', 'srm_resnet20_cifar', '--checkpoint', str(tmp_path / 'other.pth')]
    elif case == 'wrong_head':
        _, checkpoint = make_model(tmp_path, num_classes=10)
        args += ['--model', 'srm_resnet20_cifar', '--num-classes', '1000', '--checkpoint', str(checkpoint)]
    elif case == 'published_head':  # timm would replace the trained head by a random one
        args += ['--model', 'srm_resnet20_cifar.sklearn_digits', '--num-classes', '12']
    elif case == 'pickled_objects':  # torch's own message has ANSI escapes and several paragraphs
        model, _ = make_model(tmp_path)
        torch.save({'state_dict': model.state_dict(), 'args': argparse.Namespace(lr=0.1)}, tmp_path / 'args.pth')
        args += ['--model', 'srm_resnet20_cifar', '--num-classes', '1000', '--checkpoint', str(tmp_path / 'args.pth')]
    elif case == 'not_a_checkpoint':
        (tmp_path / 'junk.pth').write_bytes(b'junk')
        args += ['--model', 'srm_resnet20_cifar', '--checkpoint', str(tmp_path / 'junk.pth')]
    elif case == 'bad_option':
        args += ['--model', 'srm_resnet20_cifar', '--crop-pct', '1.5']
    elif case in ('unknown_device', 'cuda_without_cuda'):  # not silently run on the CPU
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
        device = 'foo' if case == 'unknown_device' else 'cuda'
        args += ['--model', 'srm_resnet20_cifar.sklearn_digits', '--device', device]
    elif case == 'ema_without_checkpoint':
        args += ['--model', 'srm_resnet20_cifar.sklearn_digits', '--use-ema']
    elif case == 'mode_without_compile':
        args += ['--model', 'srm_resnet20_cifar', '--compile-mode', 'reduce-overhead']
    elif case == 'tolerance_without_verify':  # ignored silently before
        args += ['--model', 'srm_resnet20_cifar.sklearn_digits', '--tolerance', '5']
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err and '\x1b' not in err and err.count('\n') == 1


def test_checkpoint_formats(zoo, tmp_path):
    """EMA/model dicts, DDP prefixes and safetensors load the same weights (same top-1 and loss)."""
    from safetensors.torch import save_file
    state = torch.load(zoo['checkpoint'], weights_only=True)
    synsets = imagenet_synsets()
    data = place(zoo['files'], [synsets[t] for t in zoo['targets']], tmp_path / 'data')
    expected = plain_scores(zoo['logits'], zoo['targets'])
    torch.save({'epoch': 3, 'state_dict_ema': {f'module.{k}': v for k, v in state.items()},
                'state_dict': {k: torch.zeros_like(v) for k, v in state.items()}}, tmp_path / 'train.pth.tar')
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / 'model.safetensors')
    for checkpoint, extra in ((tmp_path / 'train.pth.tar', ['--use-ema']), (tmp_path / 'model.safetensors', [])):
        out = tmp_path / 'r.json'
        assert main(['eval', *MODEL_ARGS, '--checkpoint', str(checkpoint), '--data', str(data),
                     '--results-file', str(out), *extra]) == 0
        assert_matches(json.loads(out.read_text()), expected)


def test_split_names_are_canonical():
    assert [canonical_split(s) for s in ('val', 'eval', 'validation', 'test', 'custom')] == \
        ['validation', 'validation', 'validation', 'test', 'custom']


@pytest.mark.parametrize('mode', ['I;16', 'I;16L', 'I;16B', 'I'])
def test_sixteen_bit_images_are_scaled_to_eight_bits(mode):
    values = np.array([[0, 128, 257, 384], [385, 30000, 65407, 65535]])
    if mode == 'I':  # 32-bit: taken as 16-bit, clipped to 0..65535
        image = Image.fromarray(np.concatenate([values, [[-5, 70000, 65535, 0]]]).astype(np.int32))
        expected = [[0, 0, 1, 1], [1, 117, 255, 255], [0, 255, 255, 0]]
    else:
        image = Image.frombytes(mode, (4, 2), values.astype('>u2' if mode == 'I;16B' else '<u2').tobytes())
        expected = [[0, 0, 1, 1], [1, 117, 255, 255]]
    assert image.mode == mode
    rgb = to_rgb(image)
    assert rgb.mode == 'RGB' and (np.asarray(rgb) == np.array(expected)[..., None]).all()


def test_reference_lookup_by_dataset_and_split(monkeypatch):
    from srm_zoo.evaluation import find_reference
    missing, reason = find_reference('srm_resnet18', 'imagenet-1k', 'validation')
    assert missing is None and 'no published weights' in reason and 'paper reports none' in reason
    release = Release('srm_resnet20_cifar', 'cifar10', 'x' * 64,
                      (Metric('sklearn-digits', 'test', top1=97.0, top5=100.0, num_images=360),), {})
    monkeypatch.setattr('srm_zoo.evaluation.verify.find_release', lambda model, tag: release)
    found, _ = find_reference('srm_resnet20_cifar.cifar10', 'sklearn-digits', 'validation', split_given=False)
    assert found.top1 == 97.0 and found.source.startswith('release manifest')  # the only metric of that dataset
    assert find_reference('srm_resnet20_cifar.cifar10', 'sklearn-digits', 'validation')[0] is None
    paper, _ = find_reference('srm_resnet56_cifar', 'cifar10', 'test')
    assert paper.top1 == 95.05 and paper.source == 'reported (Lee et al., ICCV 2019)' and paper.num_images == 10000


def test_hugging_face_dataset(zoo, tmp_path):
    """`hfds/` data (the `hf-datasets` extra): a local parquet dataset in the Hub's imagenet-1k layout."""
    datasets = pytest.importorskip('datasets')
    features = datasets.Features({'image': datasets.Image(),
                                  'label': datasets.ClassLabel(names=imagenet_synsets())})
    table = datasets.Dataset.from_dict(
        {'image': [{'bytes': f.read_bytes(), 'path': f.name} for f in zoo['files']], 'label': zoo['targets']},
        features=features)
    table.to_parquet(str(tmp_path / 'imagenet-1k' / 'validation.parquet'))
    result = run_eval(zoo, f'hfds/{tmp_path / "imagenet-1k"}', name='hf.json')
    assert_matches(result, plain_scores(zoo['logits'], zoo['targets']))
    assert (result['dataset'], result['split']) == ('imagenet-1k', 'validation')
