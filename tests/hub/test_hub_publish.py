"""`srm-zoo publish`: everything up to the HfApi boundary (HfApi itself is replaced here only)."""
import json
import shutil
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
from huggingface_hub import HfApi
from huggingface_hub.errors import OfflineModeIsEnabled

from srm_zoo.checkpoint import file_sha256
from srm_zoo.cli import main
from srm_zoo.hub import publish
from srm_zoo.hub.zoo_table import TABLE_END, TABLE_START
from srm_zoo.manifest import find_release, load_manifest, use_manifest

from test_malformed_inputs import NO_RELEASES, manifest_error

from .helpers import MODEL, TAG

REPO_ID = f'srm-zoo/{MODEL}.{TAG}'
COMMIT = 'c0ffee' + '0' * 34


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: records calls and what would have been uploaded."""
    calls = []

    def __init__(self, token=None, **kwargs):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(('create_repo', repo_id, kwargs))

    def upload_folder(self, repo_id, folder_path, allow_patterns=None, **kwargs):
        uploaded = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()
                    if p.is_file() and (allow_patterns is None or p.name in allow_patterns)}
        self.calls.append(('upload_folder', repo_id, dict(kwargs, uploaded=uploaded, token=self.token)))
        return SimpleNamespace(oid=COMMIT, commit_url=f'https://huggingface.co/{repo_id}/commit/{COMMIT}')


@pytest.fixture
def hf_api(monkeypatch):
    RecordingHfApi.calls = []
    monkeypatch.setattr(publish, 'HfApi', RecordingHfApi)
    return RecordingHfApi


@pytest.fixture
def export_dir(tmp_path, trained):
    checkpoint, _, results = trained
    out = tmp_path / 'export'
    assert main(['export', f'{MODEL}.{TAG}', '--checkpoint', str(checkpoint), '--out', str(out),
                 '--results', str(results)]) == 0
    (out / 'notes.txt').write_text('local notes, not for the Hub')
    return out


def test_publish_uploads_the_folder_and_records_the_release(hf_api, export_dir, tmp_path, capsys):
    manifest = tmp_path / 'manifest.json'
    rc = main(['publish', str(export_dir), '--repo-id', REPO_ID, '--manifest', str(manifest), '--token', 'hf_x'])
    assert rc == 0, capsys.readouterr().err
    (create, upload) = hf_api.calls
    assert create[:2] == ('create_repo', REPO_ID) and create[2]['exist_ok']
    assert upload[1] == REPO_ID and upload[2]['token'] == 'hf_x'
    assert sorted(upload[2]['uploaded']) == ['README.md', 'config.json', 'model.safetensors', 'srm_zoo_release.json']
    assert upload[2]['uploaded']['model.safetensors'] == (export_dir / 'model.safetensors').read_bytes()

    (entry,) = json.loads(manifest.read_text())['releases']
    assert entry['model'] == MODEL and entry['tag'] == TAG and entry['hf_hub_id'] == REPO_ID
    assert entry['revision'] == COMMIT and entry['sha256'] == file_sha256(export_dir / 'model.safetensors')
    assert [(m['dataset'], m['top1'], m['top5']) for m in entry['metrics']] == [
        ('cifar10', 91.25, 99.5), ('cifar10_1', 84.0, 98.25)]
    assert entry['metrics'][0]['eval_settings'] == {'img_size': 32, 'crop_pct': 1.0, 'interpolation': 'bilinear'}
    assert 'recipe' not in entry['provenance'] and entry['embedded'] is None  # the zoo has no CIFAR recipe yet
    assert 'srm-zoo cards' in capsys.readouterr().out

    (release,) = load_manifest(manifest)
    with use_manifest(manifest):
        assert timm.list_pretrained('srm_*') == [f'{MODEL}.{TAG}']
        assert timm.get_pretrained_cfg(MODEL).hf_hub_id == f'{REPO_ID}@{COMMIT}'
    assert release.metrics[0].num_images == 10000


def test_release_measures_exports_and_publishes_in_one_step(hf_api, tmp_path, monkeypatch, capsys):
    """`srm-zoo release --out DIR --repo-id`: the measured folder is uploaded and recorded like `srm-zoo publish`'s,
    and the README's zoo table (of the working directory) shows the published weights."""
    name, repo_id = 'srm_resnet20_cifar.sklearn_digits', 'myorg/srm_resnet20_cifar.sklearn_digits'  # not the zoo's
    shipped = find_release(*name.split('.'))
    digits, out, manifest = tmp_path / 'digits', tmp_path / 'hub', tmp_path / 'manifest.json'
    monkeypatch.chdir(tmp_path)
    Path('README.md').write_text(f'# zoo\n{TABLE_START}\nold\n{TABLE_END}\n')
    assert main(['digits', '--out', str(digits)]) == 0
    with use_manifest(manifest):
        rc = main(['release', name, '--checkpoint', str(shipped.embedded_dir / 'model.safetensors'), '--data',
                   str(digits), '--out', str(out), '--repo-id', repo_id, '--cards', str(tmp_path / 'cards')])
        assert rc == 0, capsys.readouterr().err
        (release,) = load_manifest()
    (_, upload) = hf_api.calls
    assert upload[1] == repo_id and upload[2]['uploaded']['model.safetensors'] == (out / 'model.safetensors').read_bytes()
    assert (release.hf_hub_id, release.revision, release.sha256) == (repo_id, COMMIT, shipped.sha256)
    assert json.loads((out / 'srm_zoo_release.json').read_text())['repo_id'] == repo_id
    assert f'hf-hub:{repo_id}' in (out / 'README.md').read_text()
    row = next(line for line in Path('README.md').read_text().splitlines() if line.startswith('| `srm_resnet20_cifar`'))
    assert f'`sklearn_digits`: `hf-hub:{repo_id}@{COMMIT}`, top-1 ' in row
    assert (release.metrics[0].top1, release.metrics[0].num_images) == (shipped.metrics[0].top1,
                                                                        shipped.metrics[0].num_images)
    assert f'Recorded the release in {manifest.resolve()}' in capsys.readouterr().out


def test_unwritable_manifest_prints_the_entry(hf_api, export_dir, tmp_path, capsys):
    blocker = tmp_path / 'not-a-folder'
    blocker.write_text('')
    assert main(['publish', str(export_dir), '--repo-id', REPO_ID, '--manifest', str(blocker / 'manifest.json')]) == 0
    out = capsys.readouterr().out
    entry = json.loads(out[out.index('{'):])
    assert entry['revision'] == COMMIT and entry['hf_hub_id'] == REPO_ID


@pytest.mark.parametrize('damage, message', [
    ('pickle', 'holds pickle files (pytorch_model.bin)'),
    ('repo', 'was exported for srm-zoo/srm_resnet20_cifar.cifar10'),
    ('weights', 'changed after the export'),
    ('incomplete', 'README.md missing'),
    ('corrupt', "srm_zoo_release.json' is not a release record of `srm-zoo export` (JSONDecodeError"),
    ('partial', "srm_zoo_release.json' is not a release record of `srm-zoo export` (TypeError"),
])
def test_bad_folders_are_refused_before_any_upload(hf_api, export_dir, tmp_path, capsys, damage, message):
    repo_id = REPO_ID
    if damage == 'pickle':
        shutil.copy(export_dir / 'model.safetensors', export_dir / 'pytorch_model.bin')
    elif damage == 'repo':
        repo_id = 'someone/else'
    elif damage == 'weights':
        data = bytearray((export_dir / 'model.safetensors').read_bytes())
        data[-1] ^= 0xFF
        (export_dir / 'model.safetensors').write_bytes(bytes(data))
    elif damage == 'corrupt':
        (export_dir / 'srm_zoo_release.json').write_text('{')
    elif damage == 'partial':
        (export_dir / 'srm_zoo_release.json').write_text('{"model": "x"}')
    else:
        (export_dir / 'README.md').unlink()
    manifest = tmp_path / 'manifest.json'
    assert main(['publish', str(export_dir), '--repo-id', repo_id, '--manifest', str(manifest)]) == 2
    assert message in capsys.readouterr().err
    assert hf_api.calls == [] and not manifest.exists()


@pytest.mark.parametrize('command', ['export', 'publish', 'cards'])
def test_commands_have_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, '--help'])
    assert exit_.value.code == 0 and f'usage: srm-zoo {command}' in capsys.readouterr().out


def test_publish_without_repo_id_is_a_user_error(export_dir, capsys):
    assert main(['publish', str(export_dir)]) == 2
    assert '--repo-id ORG/NAME is required' in capsys.readouterr().err


class OfflineHfApi(RecordingHfApi):
    def create_repo(self, repo_id, **kwargs):
        raise OfflineModeIsEnabled('Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled.')


@pytest.mark.parametrize('api, message', [
    (partial(HfApi, endpoint='http://127.0.0.1:9'), 'Cannot reach the Hugging Face Hub at '),  # nothing listens
    (OfflineHfApi, 'the Hugging Face Hub is in offline mode (HF_HUB_OFFLINE=1)'),
])
def test_unreachable_hub_is_a_user_error(export_dir, tmp_path, capsys, monkeypatch, api, message):
    monkeypatch.setattr(publish, 'HfApi', api)
    manifest = tmp_path / 'manifest.json'
    assert main(['publish', str(export_dir), '--repo-id', REPO_ID, '--token', 'x', '--manifest', str(manifest)]) == 2
    assert message in capsys.readouterr().err
    assert not manifest.exists()


def test_publish_refuses_a_broken_manifest_before_uploading(hf_api, export_dir, tmp_path, capsys):
    manifest = tmp_path / 'broken.json'
    manifest.write_bytes(b'{"releases": ')
    assert main(['publish', str(export_dir), '--repo-id', REPO_ID, '--manifest', str(manifest)]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1
    assert f'The release manifest {manifest} is broken: it is not valid JSON' in err
    assert hf_api.calls == [] and manifest.read_bytes() == b'{"releases": '


class BreakingHfApi(RecordingHfApi):
    """Uploads, while something else breaks the manifest."""
    manifest = None

    def upload_folder(self, repo_id, folder_path, allow_patterns=None, **kwargs):
        self.manifest.write_bytes(b'{}')
        return super().upload_folder(repo_id, folder_path, allow_patterns, **kwargs)


def test_publish_prints_the_entry_when_the_manifest_breaks_during_the_upload(export_dir, tmp_path, capsys,
                                                                                monkeypatch):
    manifest = tmp_path / 'manifest.json'
    manifest.write_text('{"releases": []}')
    BreakingHfApi.calls, BreakingHfApi.manifest = [], manifest
    monkeypatch.setattr(publish, 'HfApi', BreakingHfApi)
    assert main(['publish', str(export_dir), '--repo-id', REPO_ID, '--manifest', str(manifest)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f'Published {MODEL}.{TAG} to {REPO_ID} at revision {COMMIT}.\n'
                          f'{manifest_error(manifest, NO_RELEASES)} Record the release by adding '
                          'this entry to the "releases" list of the manifest:\n{')
    entry = json.loads(out[out.index('{'):])
    assert (entry['hf_hub_id'], entry['revision'], entry['model'], entry['tag']) == (REPO_ID, COMMIT, MODEL, TAG)
    assert [call[0] for call in BreakingHfApi.calls] == ['create_repo', 'upload_folder']
