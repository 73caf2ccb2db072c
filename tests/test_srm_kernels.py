"""SRM's Triton kernels, checked on the CPU through Triton's interpreter (in a subprocess, since
``TRITON_INTERPRET`` must be set before triton is imported). The cases: triton_interpret_cases.py."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from srm_zoo.layers import srm_kernels

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not srm_kernels.available(), reason='triton is not installed')
def test_triton_kernels_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET='1', SRM_ZOO_TRITON_ON_CPU='1', PYTHONPATH=str(ROOT))
    env.pop('SRM_ZOO_REFERENCE', None)
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
         str(ROOT / 'tests' / 'triton_interpret_cases.py')],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert ' passed' in result.stdout and 'skipped' not in result.stdout
