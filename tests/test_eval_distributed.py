"""``torchrun`` evaluation (gloo, 2 CPU processes) counts every image exactly once."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from srm_zoo.cli import main

from eval_helpers import imagenet_synsets, make_model, place, plain_logits, ranked_targets, write_images

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _torchrun(args):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
               '--master_port', str(_free_port()), '-m', 'srm_zoo', *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, checkpoint = make_model(tmp_path)
        files = write_images(tmp_path / 'pool', 7)  # odd: one process gets 4 images, the other 3
        synsets = imagenet_synsets()
        root = place(files, [synsets[t] for t in ranked_targets(plain_logits(model, files))], tmp_path / 'val')
        (root / synsets[0]).mkdir(exist_ok=True)
        (root / synsets[0] / 'corrupt.JPEG').write_bytes(b'\xff\xd8 truncated')
        args = ['eval', '--model', 'srm_resnet20_cifar', '--num-classes', '1000', '--checkpoint', str(checkpoint),
                '--data', str(root), '--img-size', '32', '--crop-pct', '0.875', '--workers', '0',
                '--batch-size', '2']
        assert main(args + ['--results-file', str(tmp_path / 'one.json')]) == 0
    finally:
        torch.set_num_threads(threads)
    completed = _torchrun(args + ['--results-file', str(tmp_path / 'two.json')])
    assert completed.returncode == 0, completed.stderr[-3000:]
    one = json.loads((tmp_path / 'one.json').read_text())
    two = json.loads((tmp_path / 'two.json').read_text())
    assert (one['world_size'], two['world_size']) == (1, 2)
    assert two['num_images'] == one['num_images'] == 7
    assert two['num_bad_images'] == one['num_bad_images'] == 1
    assert two['bad_images'] == one['bad_images']
    assert (two['top1'], two['top5']) == (one['top1'], one['top5'])
    assert two['loss'] == pytest.approx(one['loss'], rel=1e-6)
    assert completed.stdout.count('top-1') == 1  # only rank 0 reports
    # with 50 corrupt images (more than each process lists), past --max-bad-images both stop with the same
    # message on the summed count, neither with a traceback (torch prefixes a rank's with [rankN])
    for i in range(49):
        (root / synsets[0] / f'corrupt{i:02d}.JPEG').write_bytes(b'\xff\xd8 truncated')
    kept = (tmp_path / 'two.json').read_text()
    completed = _torchrun(args + ['--max-bad-images', '10', '--results-file', str(tmp_path / 'two.json')])
    assert completed.returncode != 0 and '[rank' not in completed.stderr, completed.stderr[-3000:]
    assert completed.stderr.count('error: 50 images could not be read (more than --max-bad-images 10)') == 2
    assert (tmp_path / 'two.json').read_text() == kept
