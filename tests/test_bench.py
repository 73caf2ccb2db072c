"""`srm-zoo bench`: interleaved rounds, timm-style columns, clear errors."""
import csv
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from srm_zoo.benchmark.memory import saved_activation_bytes
from srm_zoo.cli import main
from srm_zoo.layers import use_reference
from srm_zoo.stats import model_stats

ROOT = Path(__file__).resolve().parents[1]
TINY = ['--img-size', '32', '--batch-size', '2', '--rounds', '2', '--steps', '1', '--warmup-steps', '1']


def test_bench_infer_csv_with_reference_rows(tmp_path, capsys):
    out = tmp_path / 'bench.csv'
    assert main(['bench', '--models', 'srm_resnet20_cifar,resnet18', '--reference', *TINY,
                 '--results-file', str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r['model'], r['srm_path']) for r in rows] == [
        ('srm_resnet20_cifar', 'fast'), ('srm_resnet20_cifar', 'reference'), ('resnet18', '')]
    first = float(rows[0]['infer_samples_per_sec'])
    for row in rows:
        rate = float(row['infer_samples_per_sec'])
        assert float(row['infer_ratio']) == pytest.approx(rate / first, rel=1e-2)
        assert float(row['infer_step_time']) == pytest.approx(1e3 * 2 / rate, rel=1e-2)
        assert float(row['infer_samples_per_sec_min']) <= rate <= float(row['infer_samples_per_sec_max'])
        assert row['infer_batch_size'] == '2' and row['infer_img_size'] == '32'
        stats = model_stats(row['model'], input_size=(3, 32, 32))
        assert float(row['param_count']) == pytest.approx(stats.params_m, abs=1e-3)
        assert float(row['infer_gmacs']) == pytest.approx(stats.gmacs, abs=1e-3)
    assert rows[0]['infer_ratio'] == '1.0'  # as the JSON has it: CSV values are not rounded again
    table = capsys.readouterr().out
    assert 'infer_samples_per_sec' in table and 'srm_resnet20_cifar' in table


def test_bench_train_json(tmp_path):
    out = tmp_path / 'bench.json'
    assert main(['bench', '--models', 'srm_resnet20_cifar', '--mode', 'train', '--reference', *TINY,
                 '--results-file', str(out)]) == 0
    row, reference_row = json.loads(out.read_text())
    assert row['model'] == 'srm_resnet20_cifar' and row['srm_path'] == 'fast'
    assert row['train_samples_per_sec'] > 0 and row['train_ratio'] == 1.0 and row['train_batch_size'] == 2
    assert row['amp'] == 'float32' and row['device'] == 'cpu' and row['rounds'] == 2
    # what one forward keeps for backward: the fast path does not keep SRM's input, the reference does
    model = timm.create_model('srm_resnet20_cifar').train()
    expected_mb = saved_activation_bytes(model, torch.randn(2, 3, 32, 32)) / 2 ** 20
    assert row['train_activation_mb'] == pytest.approx(expected_mb, abs=0.05)
    assert reference_row['train_activation_mb'] > 1.1 * row['train_activation_mb']


def test_saved_activation_bytes_leave_out_the_weights():
    """A linear layer saves its input and its weight for the backward pass: only the input (1 x 1000 float32)
    is activation memory, the 4 MB weight is the model's own."""
    layer = torch.nn.Linear(1000, 1000)
    assert saved_activation_bytes(layer, torch.randn(1, 1000)) == 4000
    # under autocast a convolution saves bf16 copies of its input (1 x 3 x 8 x 8) and of its weight (64 x 3 x 3 x 3):
    # only the input's counts
    conv = torch.nn.Conv2d(3, 64, 3)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert saved_activation_bytes(conv, torch.randn(1, 3, 8, 8)) == 3 * 8 * 8 * 2


def test_bench_round_ratios_pair_each_round_with_the_first_models(tmp_path):
    """The round ratios divide each round by the first model's round next to it: their median and
    quartiles, not the ratio of the two models' medians."""
    out = tmp_path / 'bench.json'
    assert main(['bench', '--models', 'resnet18,srm_resnet20_cifar', *TINY, '--rounds', '5',
                 '--results-file', str(out)]) == 0
    first, row = json.loads(out.read_text())
    ratios = [r / f for r, f in zip(row['infer_round_samples_per_sec'], first['infer_round_samples_per_sec'])]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method='inclusive')
    # the file's rates are rounded to 2 decimals, the ratios were taken before: a relative error of up to
    # 0.005 / rate for each of the two rates (large on a slow, busy machine), then 4 decimals
    rounding = 0.01 / min(row['infer_round_samples_per_sec'] + first['infer_round_samples_per_sec']) + 1e-4
    assert row['infer_round_ratio'] == pytest.approx(median, rel=rounding)
    assert (row['infer_round_ratio_q1'], row['infer_round_ratio_q3']) == pytest.approx((q1, q3), rel=rounding)
    assert row['infer_round_ratio_q1'] <= row['infer_round_ratio'] <= row['infer_round_ratio_q3']
    assert first['infer_round_ratio'] == first['infer_round_ratio_q1'] == first['infer_round_ratio_q3'] == 1.0


def test_bench_takes_tags_without_published_weights(tmp_path):
    """A tag timm knows runs with its configuration whether or not weights are published for it (the benchmark
    never loads weights)."""
    out = tmp_path / 'bench.json'
    assert main(['bench', '--models', 'srm_resnet20_cifar.cifar10', *TINY, '--results-file', str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row['model'] == 'srm_resnet20_cifar.cifar10' and row['infer_samples_per_sec'] > 0


@pytest.mark.parametrize('args, message', [
    (['--models', 'srm_resnet05'], 'Unknown model'),
    (['--models', 'resnet18', '--device', 'cuda:0'], 'no CUDA device'),
    (['--models', 'resnet18', '--mode', 'train', '--batch-size', '1'], 'batch of at least 2'),
    (['--models', 'resnet18', '--profile-steps', '3'], 'needs --device cuda'),
    (['--models', 'resnet18', '--compile-mode', 'reduce-overhead'], 'add --compile'),
    (['--models', 'resnet18', '--device', 'mps'], 'runs on cpu or cuda only'),
    (['--models', 'resnet18.no_such_tag'], "Unknown pretrained tag 'no_such_tag' for resnet18 (timm knows: a1_in1k"),
    (['--models', 'resnet18', '--results-file', 'missing/bench.csv'], 'folder missing does not exist'),
    (['--models', 'resnet18', '--results-file', '.'], 'it is a folder; name a file in it, e.g. bench.csv'),
    (['--models', 'resnet18', '--results-file', 'afile/bench.csv'], 'afile is a file, not a folder'),
    (['--models', 'resnet18', '--results-file', 'dangling.csv'], 'bench.csv, whose folder does not exist'),
    (['--models', 'resnet18', '--results-file', ''], 'Cannot write results to an empty path'),
    (['--models', 'resnet18', '--results-format', 'json'], 'give --results-file too'),
])
def test_bench_errors_are_one_paragraph(args, message, capsys, tmp_path, monkeypatch):
    """Bad input is refused before any model runs (a results file that cannot be written included)."""
    if 'cuda:0' in args and torch.cuda.is_available():
        pytest.skip('a CUDA device is present')
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'afile').write_text('a file')
    (tmp_path / 'dangling.csv').symlink_to(tmp_path / 'missing' / 'bench.csv')  # written through, after the rounds
    assert main(['bench', *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith('srm-zoo bench: error:') and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize('flag, value', [('--img-size', '0'), ('--batch-size', '-1'), ('--threads', '0'),
                                         ('--rounds', '0'), ('--warmup-steps', '0'),
                                         ('--profile-steps', 'x')])
def test_bench_refuses_numbers_out_of_range(flag, value, capsys):
    """Out-of-range numbers are argparse errors (not a traceback, nor 0 read as "the default")."""
    with pytest.raises(SystemExit) as exit_info:
        main(['bench', '--models', 'resnet18', flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f'argument {flag}' in err and f': {value!r} is not a' in err


@pytest.mark.parametrize('settings', [dict(rounds=0), dict(img_size=0), dict(threads=0)])
def test_bench_config_refuses_numbers_out_of_range(settings):
    """The same limits hold for a BenchConfig made in Python."""
    from srm_zoo.benchmark import BenchConfig, run_benchmark
    from srm_zoo.errors import UserError
    with pytest.raises(UserError, match='at least 1'):
        run_benchmark(BenchConfig(models=['resnet18'], **settings))


def test_bench_takes_tagged_names_and_the_forced_reference_path(tmp_path, monkeypatch):
    """A pretrained tag timm knows is accepted (its configuration sets the input size); under
    SRM_ZOO_REFERENCE=1 an SRM model runs, and is labelled, on the reference path only."""
    out = tmp_path / 'bench.json'
    monkeypatch.setenv('SRM_ZOO_REFERENCE', '1')
    args = ['--batch-size', '2', '--rounds', '1', '--steps', '1', '--warmup-steps', '1', '--mode', 'train']
    assert main(['bench', '--models', 'srm_resnet20_cifar.sklearn_digits', '--reference', *args,
                 '--results-file', str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert (row['model'], row['srm_path'], row['train_img_size']) == ('srm_resnet20_cifar.sklearn_digits',
                                                                      'reference', 32)
    model = timm.create_model('srm_resnet20_cifar').train()
    with use_reference(True):
        expected_mb = saved_activation_bytes(model, torch.randn(2, 3, 32, 32)) / 2 ** 20
    assert row['train_activation_mb'] == pytest.approx(expected_mb, abs=0.05)


def test_bench_help():
    result = subprocess.run([sys.executable, '-m', 'srm_zoo', 'bench', '--help'], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and '--channels-last' in result.stdout and '--reference' in result.stdout


def test_bench_compile_mode_reaches_torch_compile(tmp_path, capsys):
    """--compile-mode is torch.compile's mode: reduce-overhead asks Inductor for CUDA graphs, which it
    skips on the CPU; the row counts the skipped graphs and the log says so."""
    out = tmp_path / 'bench.json'
    assert main(['bench', '--models', 'resnet10t', '--compile', '--compile-mode', 'reduce-overhead', *TINY,
                 '--rounds', '1', '--results-file', str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row['compile'] is True and row['compile_mode'] == 'reduce-overhead' and row['infer_samples_per_sec'] > 0
    assert row['cudagraph_skips'] >= 1
    assert f"compiled graphs run without CUDA graphs: {row['cudagraph_skips']}" in capsys.readouterr().err


def test_gpu_check_speed_table_from_real_rows():
    """The README's speed table, built by the GPU check from bench rows (here from a tiny CPU run)."""
    from srm_zoo.benchmark import BenchConfig, run_benchmark
    from srm_zoo.benchmark.gpu_check import speed_table
    settings = dict(models=['resnet50', 'srm_resnet50'], img_size=32, batch_size=2, rounds=1, steps=1,
                    warmup_steps=1, reference=True)
    rows_by_run = {'infer, eager': run_benchmark(BenchConfig(mode='infer', **settings), log=lambda line: None),
                   'train step, eager': run_benchmark(BenchConfig(mode='train', **settings), log=lambda line: None)}
    lines = speed_table(rows_by_run).splitlines()
    assert lines[0] == '| model | infer, eager | train step, eager |'
    rows = {line.split(' | ')[0].lstrip('| '): line for line in lines[2:]}
    assert set(rows) == {'resnet50', 'srm_resnet50', 'srm_resnet50 (reference SRM)'}
    infer = rows_by_run['infer, eager']
    base = next(r for r in infer if r['model'] == 'resnet50')['infer_samples_per_sec']
    fast_row = next(r for r in infer if r['srm_path'] == 'fast')
    fast = fast_row['infer_samples_per_sec']
    quartiles = f"({fast_row['infer_round_ratio_q1']:.2f}-{fast_row['infer_round_ratio_q3']:.2f})"
    assert f'| srm_resnet50 | {fast / base:.2f} {quartiles} |' in rows['srm_resnet50']
    assert rows['resnet50'].startswith('| resnet50 | 1.00 (')
    train_fast = next(r for r in rows_by_run['train step, eager'] if r['srm_path'] == 'fast')
    train_fast['train_kernel_time'] = 12.25  # what --profile-steps reports on CUDA
    train_fast['cudagraph_skips'] = 2  # what a compiled run whose CUDA graphs were skipped reports
    profiled = speed_table(rows_by_run).splitlines()[3].split(' | ')[2]
    assert f", 2 graphs without CUDA graphs, kernels 12.2 of {train_fast['train_step_time']:.1f} ms" in profiled


def test_kernel_time_sums_the_cuda_kernels_of_a_profile():
    """The GPU kernel time of a step: CUDA kernels' own time (µs) summed, CPU-side operations left out."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    from srm_zoo.benchmark.kernel_time import kernel_time_ms

    events = [SimpleNamespace(device_type=DeviceType.CUDA, self_device_time_total=1500.0),
              SimpleNamespace(device_type=DeviceType.CPU, self_device_time_total=0.0),
              SimpleNamespace(device_type=DeviceType.CUDA, self_device_time_total=250.0)]
    assert kernel_time_ms(events) == pytest.approx(1.75)


def test_gpu_check_kernel_us_leaves_out_the_cache_flush(monkeypatch):
    """A tail's kernel time in the tails benchmark: what the profiler records for flush and call, less what it
    records for the flush alone, per call in µs; NaN where the profiler records no kernel. (The profiler is
    stood in for here by one that charges 0.05 ms per flush and 0.2 ms per call of the step it is given.)"""
    from srm_zoo.benchmark import gpu_check
    flush = torch.ones(8, dtype=torch.int8)
    calls = []

    def profiled_ms(step, steps, device):
        calls.clear()
        for _ in range(steps):
            flush.fill_(1)
            step()
            assert flush.eq(0).all(), 'the flush runs in every profiled step'
        return 0.05 + 0.2 * len(calls) / steps

    monkeypatch.setattr(gpu_check, 'profile_kernel_time', profiled_ms)
    cpu = torch.device('cpu')
    flush_ms = gpu_check.profile_kernel_time(flush.zero_, 4, cpu)  # as the tails benchmark measures it, once
    assert gpu_check.kernel_us(lambda: calls.append(1), flush, flush_ms, cpu, calls=4) == pytest.approx(200.0)
    monkeypatch.setattr(gpu_check, 'profile_kernel_time', lambda step, steps, device: None)
    assert math.isnan(gpu_check.kernel_us(lambda: None, flush, flush_ms, cpu))


def test_gpu_check_records_a_raising_check_group_and_runs_the_rest():
    """A check group that raises becomes one failed check with its traceback; later groups still run."""
    from srm_zoo.benchmark.gpu_check import run_checks

    def broken_group(device):
        raise RuntimeError('kernel launch failed')

    def passing_group(device):
        return [dict(check='passing', device=str(device), passed=True)]

    results = run_checks(torch.device('cpu'), groups=(broken_group, passing_group))
    assert [r['check'] for r in results] == ['broken_group', 'passing']
    assert results[0]['passed'] is False and 'RuntimeError: kernel launch failed' in results[0]['error']
    assert results[1] == dict(check='passing', device='cpu', passed=True)


def test_gpu_check_block_tails_pass_on_the_cpu_path_and_fail_a_wrong_gate(monkeypatch):
    """The GPU check's block-tail comparison, run here on the CPU fast path: every case passes (in
    float32 both paths' errors against float64 are reported), and a gate whose standard deviation is
    1% off fails the float32 cases, however close the reference path's own error is."""
    from srm_zoo.benchmark import gpu_check
    from srm_zoo.layers import srm_fast

    # fp16 convolutions take the CPU seconds each: the CPU runs the other precisions
    monkeypatch.setattr(gpu_check, 'TAIL_PRECISIONS', [p for p in gpu_check.TAIL_PRECISIONS if p[1] != torch.float16])
    tf32 = torch.backends.cudnn.allow_tf32
    results = gpu_check.run_checks(torch.device('cpu'), groups=(gpu_check.tail_checks,))
    assert torch.backends.cudnn.allow_tf32 == tf32  # the checks' float32 setting is undone
    assert len(results) == 12 and all(r['passed'] for r in results), results
    float32 = [r for r in results if r['tolerance'] < 1e-3]
    assert len(float32) == 4 and all('reference_output' in r and r['output'] < 1e-5 for r in float32)

    sqrt = srm_fast._sqrt
    monkeypatch.setattr(srm_fast, '_sqrt', lambda t: sqrt(t) * 1.01)
    broken = gpu_check.run_checks(torch.device('cpu'), groups=(gpu_check.tail_checks,))
    assert not any(r['passed'] for r in broken if r['tolerance'] < 1e-3), broken


def test_gpu_check_second_derivatives_pass_on_the_cpu_path_and_fail_without_a_graph(monkeypatch):
    """The GPU check's second-derivative comparison, run here on the CPU fast path: every case passes; with
    the statistics' gradient cut off from the graph (first derivatives still right) the block and SRM
    cases fail."""
    from srm_zoo.benchmark import gpu_check
    from srm_zoo.layers import srm_fast

    results = gpu_check.run_checks(torch.device('cpu'), groups=(gpu_check.second_derivative_checks,))
    assert len(results) == 4 and all(r['passed'] for r in results), results
    assert all(r['grad'] < 1e-5 for r in results)

    input_grad = srm_fast.moments_input_grad
    monkeypatch.setattr(srm_fast, 'moments_input_grad', lambda *args: input_grad(*args).detach())
    broken = gpu_check.run_checks(torch.device('cpu'), groups=(gpu_check.second_derivative_checks,))
    assert all(r['grad'] < 1e-5 and not r['passed'] for r in broken), broken


def test_gpu_check_transforms_pass_and_fail_where_the_fast_path_would_take_them(monkeypatch):
    """The GPU check's torch.func and forward-AD comparison passes here; where the fast path took the
    transforms (its autograd functions support none) the checks fail."""
    from srm_zoo.benchmark import gpu_check
    from srm_zoo.layers import srm

    results = gpu_check.run_checks(torch.device('cpu'), groups=(gpu_check.transform_checks,))
    assert len(results) == 4 and all(r['passed'] for r in results), results
    monkeypatch.setattr(srm, '_traced_or_transformed', lambda: False)
    broken = gpu_check.run_checks(torch.device('cpu'), groups=(gpu_check.transform_checks,))
    assert broken and not any(r['passed'] for r in broken), broken


def test_gpu_check_layouts_pass_on_the_cpu_path_and_fail_on_a_wrong_gate(monkeypatch):
    """The GPU check of inputs the kernels leave to PyTorch (views with gaps, an expanded tensor, a float64
    shortcut) passes here; with the style deviation 1% off every case fails."""
    from srm_zoo.benchmark import gpu_check
    from srm_zoo.layers import srm_fast

    results = gpu_check.run_checks(torch.device('cpu'), groups=(gpu_check.layout_checks,))
    assert len(results) == 4 and all(r['passed'] for r in results), results
    assert all(r['output'] < 1e-5 for r in results)
    sqrt = srm_fast._sqrt
    monkeypatch.setattr(srm_fast, '_sqrt', lambda t: sqrt(t) * 1.01)
    broken = gpu_check.run_checks(torch.device('cpu'), groups=(gpu_check.layout_checks,))
    assert not any(r['passed'] for r in broken), broken


def test_gpu_check_tail_repeat_tells_a_tail_that_varies_between_runs():
    """The GPU check's repeat comparison: 0 for an SRM block's tail run twice (here on the CPU fast
    path), a difference for a tail that varies between runs (stochastic depth in training)."""
    from timm.layers import DropPath

    from srm_zoo.benchmark.gpu_check import randomize_srm_, tail_repeat_differences
    from srm_zoo.layers import SRM
    from srm_zoo.models.srm_blocks import SRMBottleneck

    generator = torch.Generator().manual_seed(0)
    block = randomize_srm_(SRMBottleneck(16, 4, attn_layer=SRM), generator)
    y, shortcut = torch.randn(2, 8, 16, 6, 6, generator=generator)
    for training in (False, True):
        differences = tail_repeat_differences(block, y, shortcut, training)
        assert set(differences) == ({'output', 'input_grad', 'shortcut_grad', 'param_grads', 'running_stats'}
                                    if training else {'output'})
        assert not any(differences.values()), differences
    block.drop_path = DropPath(0.5)
    torch.manual_seed(0)
    assert tail_repeat_differences(block, y, shortcut, training=True)['output'] > 0


def test_gpu_check_inductor_tail_is_the_block_tail(randomize):
    """The tails benchmark's Inductor comparator computes the block's tail (here compiled for the CPU)."""
    import copy
    from srm_zoo.benchmark.gpu_check import inductor_tail
    from srm_zoo.layers import SRM
    from srm_zoo.models.srm_blocks import SRMBottleneck
    block = randomize(SRMBottleneck(16, 4, attn_layer=SRM)).eval()
    y, shortcut = torch.randn(3, 16, 5, 5) * 3 + 10, torch.randn(3, 16, 5, 5)
    reference = copy.deepcopy(block).double()
    with torch.no_grad(), use_reference(True):
        expected = reference._tail(y.double(), shortcut.double())
        out = inductor_tail(block)(y, shortcut)
    torch.testing.assert_close(out.double() / expected.abs().max(), expected / expected.abs().max(),
                               rtol=1e-6, atol=1e-6)


def test_gpu_check_fastest_tails_follow_the_tails_benchmark():
    """``compile-fastest-tails`` runs each inference tail as whichever of one kernel and three the same run's
    ``tails`` timed faster for its shape and layout, the launch code's own rule elsewhere; and refuses to run
    without ``tails`` before it."""
    from srm_zoo.benchmark import gpu_check
    from srm_zoo.layers.srm_kernels import launch

    def maps(shape, channels_last):
        y = torch.empty(shape, device='meta')
        return y.contiguous(memory_format=torch.channels_last) if channels_last else y

    tail_rows = [dict(shape='256x256x56x56', channels_last=True, one_pass_us=300.0, three_kernels_us=448.0),
                 dict(shape='256x256x56x56', channels_last=False, one_pass_us=500.0, three_kernels_us=458.0)]
    rule = launch.takes_one_pass
    untimed = [maps((8, 256, 56, 56), False), maps((256, 2048, 7, 7), True)]
    with gpu_check.fastest_tails(tail_rows):
        assert launch.takes_one_pass(maps((256, 256, 56, 56), True)) is True  # three kernels by the rule
        assert launch.takes_one_pass(maps((256, 256, 56, 56), False)) is False  # one kernel by the rule
        assert [launch.takes_one_pass(y) for y in untimed] == [rule(y) for y in untimed] == [True, False]
    assert launch.takes_one_pass is rule
    with pytest.raises(ValueError, match='tails before it'):
        gpu_check._benchmark_rows('compile-fastest-tails', torch.device('cpu'), 1, 1)


@pytest.mark.parametrize('flag', ['--rounds', '--steps'])
def test_gpu_check_refuses_numbers_out_of_range_at_once(flag, capsys):
    """``--rounds 0`` or ``--steps 0`` is an argparse error, not a failure of every benchmark after the checks."""
    from srm_zoo.benchmark import gpu_check
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main([flag, '0'])
    assert exit_info.value.code == 2 and f'argument {flag}' in capsys.readouterr().err


@pytest.mark.parametrize('benchmarks', ['compile-fastest-tails', 'compile-fastest-tails,tails'])
def test_gpu_check_refuses_fastest_tails_without_tails_before_it(benchmarks, capsys):
    """Listed without ``tails`` before it, ``compile-fastest-tails`` stops the command line at once (exit
    status 2, saying why), before the checks' minutes on the GPU."""
    from srm_zoo.benchmark import gpu_check
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(['--benchmarks', benchmarks])
    assert exit_info.value.code == 2
    assert 'compile-fastest-tails follows the tails benchmark: list tails before it' in capsys.readouterr().err
