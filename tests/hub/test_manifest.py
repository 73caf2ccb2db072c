"""The release manifest: consistent with the catalogue, verifiable, and the only source of weight locations."""
import re
import shutil

import pytest
import timm

from srm_zoo.catalogue import CATALOGUE
from srm_zoo.checkpoint import file_sha256
from srm_zoo.hub.weights import WeightsUnavailableError
from srm_zoo.manifest import MANIFEST_PATH, Metric, Release, load_manifest, use_manifest, write_release

COMMIT = re.compile(r'^[0-9a-f]{40}$')


def test_package_manifest_releases_are_complete_and_verifiable():
    releases = load_manifest(MANIFEST_PATH)
    assert len({r.name for r in releases}) == len(releases)
    for release in releases:
        assert release.tag in [t.tag for t in CATALOGUE[release.model].tags], release.name
        assert re.fullmatch(r'[0-9a-f]{64}', release.sha256) and release.filename.endswith('.safetensors')
        if release.embedded:
            assert release.hf_hub_id is None
            assert file_sha256(release.embedded_dir / release.filename) == release.sha256, release.name
        else:
            assert '/' in release.hf_hub_id and COMMIT.match(release.revision), release.name
        for metric in release.metrics:
            assert 0 <= metric.top1 <= metric.top5 <= 100 and metric.num_images > 0


def test_only_manifest_releases_are_pretrained_in_timm():
    assert sorted(timm.list_pretrained('srm_*')) == sorted(r.name for r in load_manifest())
    for name, entry in CATALOGUE.items():
        for weight_tag in entry.tags:
            cfg = timm.get_pretrained_cfg(f'{name}.{weight_tag.tag}')
            release = next((r for r in load_manifest() if r.name == f'{name}.{weight_tag.tag}'), None)
            assert bool(cfg.has_weights) == (release is not None)
            assert not cfg.url


def test_write_release_replaces_the_same_tag_and_round_trips(tmp_path):
    path = tmp_path / 'manifest.json'
    first = Release(model='srm_resnet18', tag='official_in1k', sha256='a' * 64, provenance={'source': 'x'},
                    metrics=(Metric('imagenet-1k', 'validation', 70.0, 89.0, 50000, {'img_size': 224}),),
                    hf_hub_id='srm-zoo/srm_resnet18.official_in1k', revision='1' * 40)
    write_release(first, path)
    write_release(Release(model='srm_resnet20_cifar', tag='cifar10', sha256='b' * 64, metrics=(), provenance={},
                          embedded='srm_resnet20_cifar.cifar10'), path)
    second = Release(**dict(first.to_dict(), revision='2' * 40, metrics=first.metrics))
    write_release(second, path)
    releases = load_manifest(path)
    assert [r.name for r in releases] == ['srm_resnet18.official_in1k', 'srm_resnet20_cifar.cifar10']
    assert releases[0] == second and releases[0].metrics[0].eval_settings == {'img_size': 224}
    assert releases[1].embedded_dir == tmp_path / 'srm_resnet20_cifar.cifar10'


def test_embedded_weights_missing_beside_another_manifest_say_where_they_are_looked_for(tmp_path):
    """Embedded weights lie beside the active manifest: with a copy selected, the message says so (not
    'reinstall srm-zoo', which would not help)."""
    copy = tmp_path / 'manifest.json'
    shutil.copy(MANIFEST_PATH, copy)
    with use_manifest(copy), pytest.raises(WeightsUnavailableError) as error:
        timm.create_model('srm_resnet20_cifar.sklearn_digits', pretrained=True)
    assert f'Embedded weights lie beside the manifest, and the active one is {copy}' in str(error.value)
    assert 'reinstall' not in str(error.value)
