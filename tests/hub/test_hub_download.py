"""Pretrained loading over real HTTP from a Hub server on loopback (olah serving local git repositories)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from conftest import randomize_
from srm_zoo.benchmark.train_check import write_random_image_folder
from srm_zoo.catalogue import DATASET_LABEL_NAMES
from srm_zoo.checkpoint import file_sha256
from srm_zoo.cli import main
from srm_zoo.errors import UserError
from srm_zoo.hub.cards import catalogue_cards
from srm_zoo.hub.export import export_release
from srm_zoo.hub.weights import IntegrityError, MissingWeightsError, missing_weights_message
from srm_zoo.manifest import Release, use_manifest, write_release

from .helpers import MODEL, TAG, assert_same_weights, make_checkpoint

ROOT = Path(__file__).resolve().parents[2]
NAME = f'{MODEL}.{TAG}'


def publish_to(hub, repo_id: str, checkpoint: Path) -> SimpleNamespace:
    """Export ``checkpoint`` into the served repository ``repo_id`` and commit it."""
    exported = export_release(NAME, checkpoint, hub.repo_dir(repo_id))
    return SimpleNamespace(repo_id=repo_id, sha256=exported.sha256, revision=hub.commit(repo_id, 'Add weights'))


def hub_release(published: SimpleNamespace, **changes) -> Release:
    fields = dict(model=MODEL, tag=TAG, sha256=published.sha256, metrics=(), provenance={'source': 'test'},
                  hf_hub_id=published.repo_id, revision=published.revision)
    return Release(**dict(fields, **changes))


@pytest.fixture(scope='module')
def served(local_hub, trained, tmp_path_factory):
    """SRM-ResNet-20 weights served at srm-zoo/srm_resnet20_cifar.cifar10, registered by a manifest."""
    checkpoint, state_dict, _ = trained
    published = publish_to(local_hub, f'srm-zoo/{NAME}', checkpoint)
    manifest = write_release(hub_release(published), tmp_path_factory.mktemp('manifest') / 'manifest.json')
    with use_manifest(manifest):
        yield SimpleNamespace(manifest=manifest, state_dict=state_dict, **vars(published))


def test_hf_hub_prefix_loads_the_exported_weights(served):
    assert_same_weights(timm.create_model(f'hf-hub:{served.repo_id}', pretrained=True), served.state_dict)
    pinned = timm.create_model(f'hf-hub:{served.repo_id}@{served.revision}', pretrained=True)
    assert_same_weights(pinned, served.state_dict)


def test_manifest_registers_the_pinned_release_with_timm(served):
    assert timm.list_pretrained('srm_*') == [NAME]
    model = timm.create_model(MODEL, pretrained=True)
    assert_same_weights(model, served.state_dict)
    assert model.pretrained_cfg['hf_hub_id'] == f'{served.repo_id}@{served.revision}'
    adapted = timm.create_model(NAME, pretrained=True, num_classes=3)  # timm's head adaptation still applies
    assert adapted.fc.out_features == 3 and torch.equal(adapted.conv1.weight, served.state_dict['conv1.weight'])


def test_torch_hub_loads_the_release(served):
    model = torch.hub.load(str(ROOT), MODEL, source='local', pretrained=True, trust_repo=True)
    assert_same_weights(model, served.state_dict)


def test_pinned_revision_ignores_later_commits(local_hub, tmp_path):
    first = make_checkpoint(tmp_path / 'first.pth', seed=11)
    published = publish_to(local_hub, 'srm-zoo/pinning', tmp_path / 'first.pth')
    later = make_checkpoint(tmp_path / 'later.pth', seed=12)
    publish_to(local_hub, 'srm-zoo/pinning', tmp_path / 'later.pth')
    with use_manifest(write_release(hub_release(published), tmp_path / 'manifest.json')):
        assert_same_weights(timm.create_model(NAME, pretrained=True), first)
        assert_same_weights(timm.create_model('hf-hub:srm-zoo/pinning', pretrained=True), later)


def tamper_cached_weights(cache: Path) -> None:
    """Flip one bit of the last tensor of the one model.safetensors in the Hugging Face cache ``cache`` (the file
    still parses as safetensors)."""
    (cached,) = cache.glob('models--*/snapshots/*/model.safetensors')
    blob = cached.resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))


def test_tampered_weights_are_refused(served, tmp_path):
    wrong = tmp_path / 'wrong.json'
    with use_manifest(write_release(hub_release(served, sha256='0' * 64), wrong)):
        with pytest.raises(IntegrityError, match=f'records {"0" * 64}'):
            timm.create_model(NAME, pretrained=True)
        with pytest.raises(IntegrityError):  # the pinned repository named directly is checked too
            timm.create_model(f'hf-hub:{served.repo_id}@{served.revision}', pretrained=True)

    cache = tmp_path / 'cache'
    timm.create_model(NAME, pretrained=True, cache_dir=cache)
    tamper_cached_weights(cache)
    with pytest.raises(IntegrityError, match=str(served.sha256)) as error:
        timm.create_model(NAME, pretrained=True, cache_dir=cache)
    assert 'delete it (for a download, its Hugging Face cache entry)' in str(error.value)


def test_the_cards_hub_id_is_pinned_and_checked(served, tmp_path):
    """The hf-hub id the model card prints loads the release's weights and refuses a tampered cached copy; the card
    says which loads are checked."""
    card = catalogue_cards()[f'{NAME}.md']
    (hub_id,) = set(re.findall(r"timm\.create_model\('(hf-hub:[^']+)'", card))
    assert hub_id == f'hf-hub:{served.repo_id}@{served.revision}'
    assert (f"checks it whenever it loads these weights by the zoo's name (`timm.create_model('{NAME}', "
            f"pretrained=True)`) or by the pinned id (`{hub_id}`, as below)") in card
    cache = tmp_path / 'cache'
    assert_same_weights(timm.create_model(hub_id, pretrained=True, cache_dir=cache), served.state_dict)
    tamper_cached_weights(cache)
    with pytest.raises(IntegrityError, match=str(served.sha256)):
        timm.create_model(hub_id, pretrained=True, cache_dir=cache)


def test_eval_of_a_hub_repository_is_the_eval_of_the_zoo_name_released_there(served, tmp_path, capsys):
    """``srm-zoo eval --model hf-hub:REPO@REV`` evaluates what timm builds from the repository: the model named as
    its config records it, the figures of the zoo name whose release the manifest points there, the served file's
    sha256. Such a name brings its own weights: --checkpoint is refused with it."""
    write_random_image_folder(tmp_path / 'data', size=32, classes=DATASET_LABEL_NAMES['cifar10'], counts=(1, 2))
    hub_name = f'hf-hub:{served.repo_id}@{served.revision}'
    results = {}
    for key, model in (('zoo', NAME), ('hub', hub_name)):
        assert main(['eval', '--model', model, '--data', str(tmp_path / 'data'), '--split', 'validation',
                     '--workers', '0', '--device', 'cpu', '--results-file', str(tmp_path / f'{key}.json')]) == 0
        results[key] = json.loads((tmp_path / f'{key}.json').read_text())
    same = ('model', 'attention', 'dataset', 'num_classes', 'input_size', 'mean', 'std', 'top1', 'top5', 'loss')
    assert {k: results['hub'][k] for k in same} == {k: results['zoo'][k] for k in same}
    assert results['hub']['model'] == NAME and results['hub']['weights'] == hub_name
    assert results['hub']['checkpoint_sha256'] == served.sha256
    assert main(['eval', '--model', hub_name, '--checkpoint', str(tmp_path / 'zoo.json'), '--data',
                 str(tmp_path / 'data')]) == 2
    assert f'but {hub_name} brings its own' in capsys.readouterr().err


def test_eval_of_a_hub_repository_of_pytorch_model_bin_is_the_eval_of_its_folder(local_hub, tmp_path):
    """A repository in timm's older format (pytorch_model.bin, no safetensors): the Hub name evaluates and hashes
    that file, with the figures of the same files read as a local folder."""
    repo_id = 'someone/srm-bin'
    folder = local_hub.repo_dir(repo_id)
    model = randomize_(timm.create_model(MODEL, num_classes=10)).eval()
    timm.models.save_for_hf(model, str(folder), safe_serialization=False)
    revision = local_hub.commit(repo_id, 'Add weights')
    write_random_image_folder(tmp_path / 'data', size=32, classes=[str(i) for i in range(10)], counts=(0, 2))
    results = {}
    for key, name in (('hub', f'hf-hub:{repo_id}@{revision}'), ('folder', f'local-dir:{folder}')):
        assert main(['eval', '--model', name, '--data', str(tmp_path / 'data'), '--split', 'validation',
                     '--workers', '0', '--device', 'cpu', '--results-file', str(tmp_path / f'{key}.json')]) == 0
        results[key] = json.loads((tmp_path / f'{key}.json').read_text())
    assert results['hub']['checkpoint_sha256'] == file_sha256(folder / 'pytorch_model.bin')
    same = ('model', 'attention', 'dataset', 'top1', 'top5', 'loss', 'checkpoint_sha256')
    assert {k: results['hub'][k] for k in same} == {k: results['folder'][k] for k in same}


def test_offline_mode_loads_from_a_warm_cache(served, tmp_path):
    timm.create_model(NAME, pretrained=True)  # warms the cache
    timm.create_model(f'hf-hub:{served.repo_id}', pretrained=True)
    script = ('import sys, timm, srm_zoo\n'
              'from safetensors.torch import save_file\n'
              'save_file(timm.create_model(sys.argv[1], pretrained=True).state_dict(), sys.argv[2])\n'
              'save_file(timm.create_model(sys.argv[3], pretrained=True).state_dict(), sys.argv[4])\n')
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_ENDPOINT='http://127.0.0.1:9', SRM_ZOO_MANIFEST=str(served.manifest),
               PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, '-c', script, NAME, str(tmp_path / 'a.safetensors'),
                    f'hf-hub:{served.repo_id}', str(tmp_path / 'b.safetensors')], env=env, check=True, timeout=120)
    for name in ('a', 'b'):
        loaded = load_file(tmp_path / f'{name}.safetensors')
        assert loaded.keys() == served.state_dict.keys()
        assert all(torch.equal(loaded[k], v) for k, v in served.state_dict.items())


def test_pretrained_without_weights_explains_what_to_do(served, tmp_path):
    with pytest.raises(MissingWeightsError) as error:
        timm.create_model('srm_resnet32_cifar', pretrained=True)
    message = str(error.value)
    for needle in ('srm_resnet32_cifar.cifar10 has no published weights', f'models with weights: {NAME}',
                   '`srm-zoo train`', '`srm-zoo graft`', 'pretrained_cfg_overlay=dict(file='):
        assert needle in message
    assert '`srm-zoo convert`' not in message  # the authors' code builds no CIFAR network
    assert '`srm-zoo convert`' in missing_weights_message('srm_resnet50', None)
    expected = make_checkpoint(tmp_path / 'r32.pth', seed=4, model='srm_resnet32_cifar', wrap='')
    save_file(expected, str(tmp_path / 'r32.safetensors'))
    overlay = dict(file=str(tmp_path / 'r32.safetensors'))
    assert_same_weights(timm.create_model('srm_resnet32_cifar', pretrained=True, pretrained_cfg_overlay=overlay),
                        expected)


@pytest.mark.parametrize('target, problem', [('missing.safetensors', 'does not exist'),
                                             ('.', 'is a folder, not a weights file')])
def test_missing_overlay_file_is_named(tmp_path, target, problem):
    path = str(tmp_path / target)
    with pytest.raises(FileNotFoundError) as error:
        timm.create_model('srm_resnet50', pretrained=True, pretrained_cfg_overlay=dict(file=path))
    assert isinstance(error.value, UserError) and f"The weights file {path!r}" in str(error.value)
    assert problem in str(error.value)


def test_embedded_release_loads_and_is_checked(trained, tmp_path, capsys):
    checkpoint, state_dict, _ = trained
    export_release(NAME, checkpoint, tmp_path / NAME)
    manifest = tmp_path / 'manifest.json'
    assert main(['publish', str(tmp_path / NAME), '--embedded', '--manifest', str(manifest)]) == 0
    # the folder recorded, not the package's (which it named before)
    assert f"as embedded weights ({tmp_path / NAME / 'model.safetensors'})" in capsys.readouterr().out
    assert main(['publish', str(tmp_path / NAME), '--embedded']) == 2  # not next to the package manifest
    with use_manifest(manifest):
        model = timm.create_model(MODEL, pretrained=True)
        assert_same_weights(model, state_dict)
        assert model.pretrained_cfg['file'] == str(tmp_path / NAME / 'model.safetensors')
        assert timm.list_pretrained('srm_*') == [NAME]
        save_file({k: v + 1 if v.is_floating_point() else v for k, v in state_dict.items()},
                  str(tmp_path / NAME / 'model.safetensors'))
        with pytest.raises(IntegrityError, match='was altered; reinstall srm-zoo'):  # deleting it cannot help
            timm.create_model(MODEL, pretrained=True)
    assert timm.get_pretrained_cfg(NAME).file is None  # the previous manifest is back
