import atexit
import os
import shutil
import socket
import tempfile

import pytest
import torch


def _point_hub_at_loopback() -> None:
    """Hub tests run a Hub server on loopback (tests/hub); huggingface_hub reads its endpoint at import,
    so reserve the port and a throw-away cache before anything imports it."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    cache = tempfile.mkdtemp(prefix='srm-zoo-hf-cache-')
    atexit.register(shutil.rmtree, cache, True)
    os.environ.update(HF_ENDPOINT=f'http://127.0.0.1:{port}', HF_HUB_CACHE=cache, HF_HUB_DISABLE_TELEMETRY='1')
    os.environ.pop('HF_HUB_OFFLINE', None)


_point_hub_at_loopback()

import srm_zoo  # noqa: E402,F401  (registers the models)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and BatchNorm statistic random values (fresh models are degenerate:
    zero-initialised last BNs make every residual branch, and so every SRM, output zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if not tensor.is_floating_point():
                continue
            if name.endswith('running_var'):
                tensor.copy_(torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype) + 0.5)
            elif name.endswith('.weight') and tensor.ndim == 1:
                tensor.copy_(torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype) * 0.1)
    return model


@pytest.fixture
def randomize():
    return randomize_


@pytest.fixture
def one_thread():
    """Tiny models run fastest, and steadily on a busy machine, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
