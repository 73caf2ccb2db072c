"""`srm-zoo export`: a complete Hub repository folder in timm's format, with a model card."""
import json

import pytest
import timm
from safetensors.torch import load_file

from srm_zoo.checkpoint import file_sha256
from srm_zoo.cli import main
from srm_zoo.hub.cards import split_front_matter

from .helpers import MODEL, TAG, make_checkpoint, make_results


def test_export_writes_timm_repository_with_card(tmp_path, trained):
    checkpoint, state_dict, results = trained
    out = tmp_path / 'repo'
    assert main(['export', f'{MODEL}.{TAG}', '--checkpoint', str(checkpoint), '--out', str(out),
                 '--results', str(results)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors',
                                                     'srm_zoo_release.json']
    weights = load_file(out / 'model.safetensors')
    assert weights.keys() == state_dict.keys() and all((weights[k] == v).all() for k, v in state_dict.items())

    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == MODEL and config['num_classes'] == 10
    assert config['label_names'][0] == 'airplane' and config['pretrained_cfg']['input_size'] == [3, 32, 32]

    release = json.loads((out / 'srm_zoo_release.json').read_text())
    assert (release['model'], release['tag']) == (MODEL, TAG)
    assert release['sha256'] == file_sha256(out / 'model.safetensors')
    assert release['provenance']['checkpoint_sha256'] == file_sha256(checkpoint)
    assert release['repo_id'] == f'srm-zoo/{MODEL}.{TAG}'

    meta, body = split_front_matter((out / 'README.md').read_text())
    assert meta['library_name'] == 'timm' and meta['license'] == 'apache-2.0'
    assert {'image-classification', 'timm', 'srm'} <= set(meta['tags']) and meta['datasets'] == ['cifar10']
    (index,) = meta['model-index']
    assert index['name'] == f'{MODEL}.{TAG}'
    measured = {(r['dataset']['type'], r['dataset']['split']): {m['name']: m['value'] for m in r['metrics']}
                for r in index['results']}
    assert measured == {('cifar10', 'test'): {'Top-1 Accuracy': 91.25, 'Top-5 Accuracy': 99.5},
                        ('cifar10_1', 'test'): {'Top-1 Accuracy': 84.0, 'Top-5 Accuracy': 98.25}}
    assert all(r['task']['type'] == 'image-classification' for r in index['results'])
    for section in ('## Model Details', '### Image Classification', '### Feature Map Extraction',
                    '### Image Embeddings', '## Results', '## Citation'):
        assert section in body
    assert "timm.create_model('hf-hub:srm-zoo/srm_resnet20_cifar.cifar10', pretrained=True)" in body
    assert ('`hf-hub:srm-zoo/srm_resnet20_cifar.cifar10` without a revision, as below, follows the repository\'s '
            'main branch and is not checked') in body  # the commit is unknown until the upload
    assert '| these weights (`srm-zoo eval`) | CIFAR-10 | test | 91.25 | 99.50 | 10000 |' in body
    assert 'Params (M): 0.271' in body and 'arxiv.org/abs/1903.10829' in body


def test_export_replaces_an_earlier_export_but_no_one_else_s_files(tmp_path, trained, capsys):
    """Exporting again into an export folder replaces it; a folder holding a README.md (a project's) that no export
    wrote is refused and left as it was; an empty --out is refused, not taken as the current folder."""
    checkpoint, _, results = trained
    export = ['export', f'{MODEL}.{TAG}', '--checkpoint', str(checkpoint), '--results', str(results), '--out']
    out = tmp_path / 'repo'
    assert main([*export, str(out)]) == 0 and main([*export, str(out)]) == 0
    project = tmp_path / 'project'
    project.mkdir()
    (project / 'README.md').write_text('# my project\n')
    assert main([*export, str(project)]) == 2
    assert "holds README.md, which an export would replace, but it is not an earlier `srm-zoo export` folder" in \
        capsys.readouterr().err
    assert [p.name for p in project.iterdir()] == ['README.md']
    assert (project / 'README.md').read_text() == '# my project\n'
    assert main([*export, '']) == 2
    assert '--out is empty' in capsys.readouterr().err
    assert main(['export', f'{MODEL}.{TAG}', '--checkpoint', str(checkpoint), '--results', str(tmp_path),
                 '--out', str(tmp_path / 'new')]) == 2
    assert f"Results file '{tmp_path}' is a folder" in capsys.readouterr().err


def test_export_refuses_results_measured_with_other_preprocessing(tmp_path, trained, capsys):
    """Results measured at another image size than the exported config's (a run trained at --img-size 16, say)
    are not what the published weights give as their config runs them: refused, naming the setting."""
    checkpoint, _, results = trained
    rows = json.loads(results.read_text())
    rows[1]['img_size'] = 16
    other = tmp_path / 'other.json'
    other.write_text(json.dumps(rows))
    assert main(['export', f'{MODEL}.{TAG}', '--checkpoint', str(checkpoint), '--results', str(other),
                 '--out', str(tmp_path / 'repo')]) == 2
    assert ('the cifar10_1 results were measured with img_size 16 (the config: 32): the exported config runs the '
            'weights otherwise. Evaluate with `srm-zoo eval ... --img-size 32 --crop-pct 1.0 --interpolation '
            'bilinear`') in capsys.readouterr().err
    assert not (tmp_path / 'repo').exists()


def test_imagenet_export_carries_label_names(tmp_path):
    make_checkpoint(tmp_path / 'r18.pth', seed=0, model='srm_resnet18', wrap='model')
    assert main(['export', 'srm_resnet18.official_in1k', '--checkpoint', str(tmp_path / 'r18.pth'),
                 '--out', str(tmp_path / 'out')]) == 0
    config = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert len(config['label_names']) == 1000 and config['label_names'][0] == 'n01440764'
    assert 'tench' in config['label_descriptions']['n01440764']
    meta, body = split_front_matter((tmp_path / 'out' / 'README.md').read_text())
    assert 'model-index' not in meta  # nothing measured yet
    assert '| reported:' not in body  # the paper reports no ResNet-18 result


def test_results_of_other_weights_are_refused(tmp_path, trained, capsys):
    checkpoint, _, _ = trained
    other = tmp_path / 'other.pth'
    make_checkpoint(other, seed=5)
    results = make_results(tmp_path / 'results.json', other)
    out = tmp_path / 'new' / 'repo'
    assert main(['export', f'{MODEL}.{TAG}', '--checkpoint', str(checkpoint), '--out', str(out),
                 '--results', str(results)]) == 2
    err = capsys.readouterr().err
    assert 'measured on weights with sha256' in err and 'Traceback' not in err
    assert not (tmp_path / 'new').exists()  # no folder left behind, not even the ones created for --out


@pytest.mark.parametrize('argv, message', [
    (['srm_resnet21_cifar'], 'Did you mean'),
    ([f'{MODEL}.imagenet'], 'has no tag'),
])
def test_bad_model_names_are_user_errors(tmp_path, trained, capsys, argv, message):
    checkpoint, _, _ = trained
    assert main(['export', *argv, '--checkpoint', str(checkpoint), '--out', str(tmp_path / 'o')]) == 2
    assert message in capsys.readouterr().err


def test_mismatching_checkpoint_is_refused_by_export(tmp_path, capsys):
    make_checkpoint(tmp_path / 'r32.pth', seed=0, model='srm_resnet32_cifar')
    published = timm.list_pretrained('srm_*')
    assert main(['export', f'{MODEL}.{TAG}', '--checkpoint', str(tmp_path / 'r32.pth'),
                 '--out', str(tmp_path / 'o')]) == 2
    assert 'not in the model: layer1.3' in capsys.readouterr().err
    assert timm.list_pretrained('srm_*') == published and not (tmp_path / 'o' / 'model.safetensors').exists()


@pytest.mark.parametrize('option, value, message', [
    ('--out', 'afile', "--out 'afile' is a file; name a folder to write into."),
    ('--repo-id', 'not a repo', "--repo-id 'not a repo' is not a Hub repository id of the form ORG/NAME."),
])
def test_bad_out_and_repo_id_are_refused_before_anything_is_written(tmp_path, trained, capsys, monkeypatch, option,
                                                                    value, message):
    checkpoint, _, _ = trained
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'afile').write_text('kept')
    options = {'--out': 'out', '--repo-id': 'org/name', option: value}
    assert main(['export', f'{MODEL}.{TAG}', '--checkpoint', str(checkpoint), *sum(options.items(), ())]) == 2
    assert capsys.readouterr().err == f'srm-zoo export: error: {message}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['afile'] and (tmp_path / 'afile').read_text() == 'kept'
