"""SRM's Triton kernels without a GPU: their results through Triton's interpreter (in a subprocess,
since ``TRITON_INTERPRET`` must be set before triton is imported; the cases are in
triton_interpret_cases.py), and their compilation to Hopper (sm_90) machine code, which the
interpreter does not exercise."""
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


# sizes of the tiles; every combination of the boolean switches is compiled
BLOCK_SIZES = {'BLOCK_C': 16, 'BLOCK_HW': 64, 'BLOCK': 256, 'BLOCK_N': 128}


def _compile_cases():
    from srm_zoo.layers.srm_kernels import _kernels
    kernels = [k for name, k in vars(_kernels).items() if not name.startswith('_') and hasattr(k, 'arg_names')]
    for kernel in kernels:
        switches = [p.name for p in kernel.params if p.is_constexpr and p.name not in BLOCK_SIZES]
        for values in itertools.product((True, False), repeat=len(switches)):
            flags = dict(zip(switches, values))
            if flags.get('USE_MEAN') is False and flags.get('USE_STD') is False:
                continue  # no style pooling uses neither statistic
            for data, accumulate in (('*bf16', '*fp32'), ('*fp64', '*fp64')):
                yield kernel, flags, data, accumulate


@pytest.mark.skipif(not srm_kernels.available(), reason='triton is not installed')
def test_kernels_compile_for_sm90():
    from srm_zoo.benchmark.registers import compile_kernel
    compiled = []
    for kernel, flags, data, accumulate in _compile_cases():
        constexprs = {**{n: v for n, v in BLOCK_SIZES.items() if n in kernel.arg_names}, **flags}
        binary = compile_kernel(kernel, constexprs, data, accumulate)
        assert binary.asm['cubin'], (kernel.__name__, flags, data)
        compiled.append(kernel.__name__)
    assert len(set(compiled)) >= 9


@pytest.mark.skipif(not srm_kernels.available(), reason='triton is not installed')
def test_registers_of_the_one_kernel_tail_from_ptxas(monkeypatch, capsys):
    """``python -m srm_zoo.benchmark.registers`` reports ptxas's registers per thread and spills of the
    one-kernel tail on the launch code's tiles (here for the 56 x 56 stage alone): a 16-channel tile in
    channels_last, 4 channels in NCHW, with and without a shortcut BatchNorm."""
    from srm_zoo.benchmark import gpu_check, registers
    monkeypatch.setattr(gpu_check, 'STAGE_TAILS', ((256, 56),))
    registers.main([])
    header, *lines = capsys.readouterr().out.splitlines()
    assert header == 'shape,channels_last,shortcut_norm,tile,registers,spill_bytes'
    rows = [line.split(',') for line in lines]
    assert [row[:4] for row in rows] == [['256x256x56x56', layout, norm, tile]
                                        for layout, tile in (('True', '16x128'), ('False', '4x512'))
                                        for norm in ('False', 'True')]
    for row in rows:
        assert 16 <= int(row[4]) <= 255 and int(row[5]) >= 0, row


@pytest.mark.skipif(not srm_kernels.available(), reason='triton is not installed')
def test_channel_blocks_that_are_no_power_of_two_are_refused(capsys):
    """The tile experiments' channels per program must be a power of two (Triton's ranges are): a clear
    error from the launch code and from the register tool's command line, before anything compiles."""
    from srm_zoo.benchmark import registers
    from srm_zoo.layers.srm_kernels import launch
    y = torch.empty(2, 16, 4, 4, device='meta')
    with pytest.raises(ValueError, match='power of two, not 3'):
        launch.folded_tail_one_pass(y, y, (), 1e-5, y, (), 1e-5, 1e-5, 'mean_std', channels_per_program=3)
    for text, message in (('3', "3 is not a power of two"), ('0', '0 is not a power of two'),
                          ('x', "'x' is not a whole number")):
        with pytest.raises(SystemExit) as exit_info:
            registers.main(['--channels-per-program', text])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(not srm_kernels.available(), reason='triton is not installed')
def test_grid_arguments_follow_the_kernels_parameters():
    """The kernels that take a grid's arguments (``*grid.args``, positionally) name them as
    ``_Grid.ARG_NAMES`` does, in its order, right before their switches and tiles."""
    from srm_zoo.layers.srm_kernels import _kernels, launch
    names = list(launch._Grid.ARG_NAMES)
    for kernel in (_kernels.input_grad_kernel, _kernels.affine_residual_relu_kernel, _kernels.folded_tail_kernel):
        runtime = [p.name for p in kernel.params if not p.is_constexpr]
        assert runtime[-len(names):] == names, kernel.__name__


@pytest.mark.skipif(not srm_kernels.available(), reason='triton is not installed')
def test_host_tile_arithmetic_matches_triton():
    """The launch code's integer helpers (plain Python: triton's are slow to call from host code)."""
    import triton
    from srm_zoo.layers.srm_kernels.launch import _cdiv, _next_power_of_2
    for n in range(1, 600):
        assert _next_power_of_2(n) == triton.next_power_of_2(n)
        for d in (1, 3, 16, 128):
            assert _cdiv(n, d) == triton.cdiv(n, d)


@pytest.mark.parametrize('shape, channels_last, one_pass', [
    ((2, 256, 56, 56), False, False), ((8, 256, 56, 56), False, True),  # 4 channels a program: 128, 512 programs
    ((64, 512, 28, 28), False, True), ((256, 1024, 14, 14), False, False),  # 14 x 14: smaller than 28 x 28
    ((256, 256, 56, 56), True, False), ((256, 2048, 7, 7), True, False)])  # channels_last: never
def test_inference_tail_takes_one_kernel_where_that_measured_faster(monkeypatch, shape, channels_last, one_pass):
    """``folded_block_tail`` runs as one kernel on NCHW maps of 28 x 28 or more where it has 512 programs or
    more (one for each sample and block of channels), else as three: always in channels_last."""
    from srm_zoo.layers.srm_kernels import launch
    picked = []
    for name in ('folded_tail_one_pass', 'folded_tail_three_kernels'):
        monkeypatch.setattr(launch, name, lambda *args, name=name: picked.append(name))
    y = torch.empty(shape, device='meta')
    if channels_last:
        y = y.contiguous(memory_format=torch.channels_last)
    launch.folded_block_tail(y, y, (), 1e-5, y, (), 1e-5, 1e-5, 'mean_std')
    assert launch.takes_one_pass(y) == one_pass
    assert picked == ['folded_tail_one_pass' if one_pass else 'folded_tail_three_kernels']
