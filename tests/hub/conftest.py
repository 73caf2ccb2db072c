"""Fixtures of the Hub tests: a real Hub server (olah) on loopback, and a trained-looking checkpoint."""
import os

import pytest

from .helpers import make_checkpoint, make_results
from .local_hub import LocalHub


@pytest.fixture(scope='session')
def local_hub(tmp_path_factory):
    """olah on the loopback endpoint that tests/conftest.py gave huggingface_hub (HF_ENDPOINT)."""
    hub = LocalHub(tmp_path_factory.mktemp('local-hub'), os.environ['HF_ENDPOINT']).start()
    yield hub
    hub.stop()


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
    """(checkpoint path, its state dict, results file with two datasets) of a randomised SRM-ResNet-20."""
    folder = tmp_path_factory.mktemp('trained')
    checkpoint = folder / 'checkpoint.pth.tar'
    state_dict = make_checkpoint(checkpoint, seed=1)
    results = make_results(folder / 'results.json', checkpoint,
                           rows=(('cifar10', 'test', 91.25, 99.5, 10000), ('cifar10_1', 'test', 84.0, 98.25, 2000)))
    return checkpoint, state_dict, results
