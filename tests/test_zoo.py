"""Catalogue, parameter counts, weight-decay groups, torch.hub and the `srm-zoo list` command."""
import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from timm.optim import create_optimizer_v2

from srm_zoo.catalogue import CATALOGUE, get_entry
from srm_zoo.cli import build_parser, main
from srm_zoo.stats import model_stats

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('name, params', [('srm_resnet50', 25_617_448), ('srm_resnet101', 44_679_208)])
def test_exact_parameter_counts(name, params):
    assert model_stats(name).params == params
    baseline = get_entry(name).baseline
    # SRM costs 4 learnable values per channel of every block output
    srm_channels = sum(m.cfc.shape[0] for m in timm.create_model(name).modules() if hasattr(m, 'cfc'))
    assert params - model_stats(baseline).params == 4 * srm_channels


def test_registry_is_derived_from_catalogue():
    assert set(timm.list_models('srm_*')) == set(CATALOGUE)
    for name, entry in CATALOGUE.items():
        tags = timm.list_models(name, pretrained=False, include_tags=True)
        assert tags == [f'{name}.{t.tag}' for t in entry.tags]
        assert entry.description.split(':')[0] in timm.models.model_entrypoint(name).__doc__
    assert set(timm.list_models(module='srm_resnet_cifar')) == {n for n, e in CATALOGUE.items() if e.family == 'cifar'}


def test_architecture_matches_plain_counterpart():
    """Same kwargs as timm's plain model: identical weights outside SRM give identical shapes."""
    for name in ('srm_resnet50d', 'srm_resnext50_32x4d', 'srm_wide_resnet50_2'):
        plain = {k: v.shape for k, v in timm.create_model(get_entry(name).baseline).state_dict().items()}
        srm = {k: v.shape for k, v in timm.create_model(name).state_dict().items() if '.se.' not in k}
        assert srm == plain


def test_only_the_networks_of_the_authors_code_are_offered_for_conversion():
    """The authors' code builds plain Bottleneck ResNets only (depth 50/101/152): no checkpoint of theirs can exist
    for the other networks, so their cards and messages do not offer `srm-zoo convert`."""
    assert {name for name, entry in CATALOGUE.items() if entry.authors_code_builds} == {
        'srm_resnet50', 'srm_resnet101', 'srm_resnet152'}
    assert all(('`srm-zoo convert`' in entry.ways_to_weights) == entry.authors_code_builds
               for entry in CATALOGUE.values())


def test_unknown_model_suggests_names():
    with pytest.raises(KeyError, match='srm_resnet50'):
        get_entry('srm_resnet05')
    with pytest.raises(KeyError) as error:  # the zoo's names only: a plain timm model would not be one
        get_entry('resnet1')
    suggested = str(error.value).split('Did you mean: ')[1].split('?')[0].split(', ')
    assert 'srm_resnet18' in suggested and all(name.startswith('srm_') for name in suggested)


def test_no_weight_decay_on_srm_weights():
    model = timm.create_model('srm_resnet18')
    optimizer = create_optimizer_v2(model, 'sgd', lr=0.1, weight_decay=1e-4)
    decayed = {id(p) for g in optimizer.param_groups if g['weight_decay'] > 0 for p in g['params']}
    names = {id(p): n for n, p in model.named_parameters()}
    cfc = [n for n, _ in model.named_parameters() if n.endswith('.se.cfc')]
    assert len(cfc) == 8
    assert not any(names[i].endswith('.cfc') for i in decayed)
    assert 'layer1.0.conv1.weight' in {names[i] for i in decayed}
    assert 'layer1.0.se.bn.weight' not in {names[i] for i in decayed}
    cifar = timm.create_model('srm_resnet20_cifar')
    assert len(cifar.no_weight_decay()) == 9


def test_gmacs_of_resnet50_family():
    assert model_stats('srm_resnet50').gmacs == pytest.approx(4.09, abs=0.01)
    assert model_stats('srm_resnet20_cifar').gmacs == pytest.approx(0.0406, abs=0.001)


def test_torch_hub_local_load_passes_kwargs():
    model = torch.hub.load(str(ROOT), 'srm_resnet18', source='local', num_classes=7, trust_repo=True)
    assert type(model).__name__ == 'SRMResNet' and model.fc.out_features == 7
    assert model.pretrained_cfg['architecture'] == 'srm_resnet18'


def test_hubconf_exposes_only_models():
    sys.path.insert(0, str(ROOT))
    try:
        import hubconf
    finally:
        sys.path.remove(str(ROOT))
    public = {n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith('_')}
    assert public == set(CATALOGUE)
    assert hubconf.dependencies == ['torch', 'timm']
    assert 'SRM-ResNet-50' in hubconf.srm_resnet50.__doc__


def test_results_files_never_replace_binary_data(tmp_path, capsys):
    """A --results-file naming weights (binary data, as an image would be) is refused before any work and kept;
    a text file is a results file to replace."""
    weights = tmp_path / 'weights.safetensors'
    weights.write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{}\x00\xff')
    bench = ['bench', '--models', 'srm_resnet20_cifar', '--rounds', '1', '--steps', '1', '--img-size', '8']
    for argv in (['list', '--results-file', str(weights)], [*bench, '--results-file', str(weights)]):
        assert main(argv) == 2
        assert 'the file exists and holds binary data (not a results file)' in capsys.readouterr().err
    assert weights.read_bytes() == b'\x08\x00\x00\x00\x00\x00\x00\x00{}\x00\xff'
    notes = tmp_path / 'models.txt'
    notes.write_text('an older listing, in UTF-8: \u00e9\n')
    assert main(['list', 'srm_resnet50', '--results-file', str(notes)]) == 0
    assert notes.read_text().startswith('model ')


def test_cli_list_json(tmp_path, capsys):
    out = tmp_path / 'zoo.json'
    assert main(['list', 'srm_resnet5*', '--format', 'json', '--results-file', str(out)]) == 0
    rows = {r['model']: r for r in json.loads(out.read_text())}
    assert set(rows) == {'srm_resnet50', 'srm_resnet50d', 'srm_resnet56_cifar'}
    assert rows['srm_resnet50']['param_count'] == pytest.approx(25.617, abs=1e-3)
    assert rows['srm_resnet50']['reported_top1'] == 77.13
    assert rows['srm_resnet50d']['reported_top1'] is None


def test_cli_errors_and_help(capsys):
    result = subprocess.run([sys.executable, '-m', 'srm_zoo', 'list', 'nothing_like_this'],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and 'No SRM model matches' in result.stderr and 'Traceback' not in result.stderr
    commands = [name for name in build_parser()._subparsers._group_actions[0].choices]
    assert {'list', 'eval', 'train', 'convert', 'graft', 'export', 'publish', 'release', 'cards', 'bench'} <= set(commands)
    for command in [[]] + [[name] for name in commands]:
        with pytest.raises(SystemExit) as exit_info:
            main([*command, '--help'])
        help_text = ' '.join(capsys.readouterr().out.split())
        assert exit_info.value.code == 0 and 'usage: srm-zoo' in help_text
        # a default is said once, and never as a bare None
        assert '(default: None)' not in help_text and not re.search(r'default:[^()]*\) \(default', help_text), command


def test_default_tag_is_timms(tmp_path):
    from srm_zoo.catalogue import resolve_name
    from srm_zoo.evaluation.model import build_model
    from srm_zoo.manifest import use_manifest
    for name, entry in CATALOGUE.items():
        assert entry.default_tag == timm.models.get_pretrained_cfg(name).tag, name
    # the first tag with weights, not the first tag
    assert resolve_name('srm_resnet20_cifar') == 'srm_resnet20_cifar.sklearn_digits'
    assert build_model('srm_resnet20_cifar').name == 'srm_resnet20_cifar.sklearn_digits'  # srm-zoo eval's model
    with use_manifest(tmp_path / 'no-releases.json'):  # without weights: the first tag, for timm too
        assert timm.models.get_pretrained_cfg('srm_resnet20_cifar').tag == 'cifar10'
        assert resolve_name('srm_resnet20_cifar') == 'srm_resnet20_cifar.cifar10'


def test_missing_weights_advice_names_the_tag(tmp_path):
    from safetensors.torch import save_file
    from srm_zoo.hub.weights import MissingWeightsError
    name = 'srm_resnet20_cifar.cifar10'  # the architecture's other tag has weights
    with pytest.raises(MissingWeightsError) as error:
        timm.create_model(name, pretrained=True)
    message = str(error.value)
    assert f"timm.create_model('{name}', pretrained=True, pretrained_cfg_overlay=dict(file=" in message
    assert 'with weights: srm_resnet20_cifar.sklearn_digits' in message
    # the advice builds that tag's cfg (CIFAR-10 normalisation and labels), not the default tag's
    weights = tmp_path / 'model.safetensors'
    save_file(timm.create_model(name).state_dict(), str(weights))
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)))
    assert model.pretrained_cfg['tag'] == 'cifar10' and model.pretrained_cfg['mean'][0] == pytest.approx(0.4914)


def test_cli_output_into_a_closed_pipe_ends_quietly():
    """`srm-zoo list | head` where head has already gone: no traceback, status 1."""
    process = subprocess.Popen([sys.executable, '-m', 'srm_zoo', 'list', '--format', 'json'], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before anything is written
    err = process.stderr.read().decode()
    assert process.wait() == 1 and err == ''


def test_cli_list_shows_default_and_weighted_tags(capsys):
    assert main(['list', 'srm_resnet*_cifar', '--format', 'csv']) == 0
    rows = {row['model']: row for row in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert rows['srm_resnet20_cifar']['default_tag'] == 'sklearn_digits'
    assert rows['srm_resnet20_cifar']['tags_with_weights'] == 'sklearn_digits'
    r32 = rows['srm_resnet32_cifar']
    assert (r32['default_tag'], r32['tags_with_weights']) == ('cifar10', '')


@pytest.mark.parametrize('target, message', [('missing/zoo.csv', 'does not exist'),
                                             ('.', 'it is a folder; name a file in it, e.g. '),
                                             ('', 'an empty path')])
def test_cli_list_refuses_an_unwritable_results_file_before_any_work(tmp_path, monkeypatch, capsys, target, message):
    def no_work(*args, **kwargs):
        raise AssertionError('model statistics computed before the results file was checked')
    monkeypatch.setattr('srm_zoo.cli.list_models.model_stats', no_work)
    assert main(['list', 'srm_resnet20*', '--results-file', str(tmp_path / target) if target else '']) == 2
    err = capsys.readouterr().err
    assert err.startswith('srm-zoo list: error: Cannot write') and message in err and err.count('\n') == 1
    assert target != '.' or err.rstrip().endswith('models.csv.')  # a file name its suffix would write


def test_cli_list_format_follows_the_results_file_suffix(tmp_path):
    assert main(['list', 'srm_resnet20*', '--results-file', str(tmp_path / 'zoo.json')]) == 0
    assert [row['model'] for row in json.loads((tmp_path / 'zoo.json').read_text())] == ['srm_resnet20_cifar']
    assert main(['list', 'srm_resnet20*', '--results-file', str(tmp_path / 'zoo.csv')]) == 0
    assert next(csv.DictReader((tmp_path / 'zoo.csv').open()))['model'] == 'srm_resnet20_cifar'
    assert main(['list', 'srm_resnet20*', '--format', 'csv', '--results-file', str(tmp_path / 'zoo.txt')]) == 0
    assert (tmp_path / 'zoo.txt').read_text().startswith('model,param_count,')  # an explicit --format wins
    assert main(['list', 'srm_resnet20*', '--format', 'table', '--results-file', str(tmp_path / 'table.json')]) == 0
    assert (tmp_path / 'table.json').read_text().startswith('model  ')
