"""``srm-zoo bench``: throughput of SRM models against their baselines, interleaved in one process."""
import argparse
import sys

from ..benchmark import BenchConfig, run_benchmark
from ..compiling import COMPILE_MODES
from ._help import DefaultsHelpFormatter
from ..paths import check_results_format, check_writable_file, file_format
from ._output import write_rows
from ._types import non_negative_int, positive_int

SUMMARY_COLUMNS = ('model', 'srm_path', '{m}_samples_per_sec', '{m}_ratio', '{m}_round_ratio_q1', '{m}_round_ratio',
                   '{m}_round_ratio_q3', '{m}_ratio_best', '{m}_step_time', '{m}_kernel_time', '{m}_peak_mem_mb',
                   '{m}_activation_mb', '{m}_gmacs', 'param_count')


def run(args: argparse.Namespace) -> int:
    config = BenchConfig(
        models=[m.strip() for m in args.models.split(',') if m.strip()], mode=args.mode, device=args.device,
        amp=args.amp, channels_last=args.channels_last, compile=args.compile, compile_mode=args.compile_mode,
        batch_size=args.batch_size, img_size=args.img_size, rounds=args.rounds, steps=args.steps,
        warmup_steps=args.warmup_steps, reference=args.reference, threads=args.threads,
        profile_steps=args.profile_steps)
    check_results_format(args.results_file, args.results_format)
    fmt = file_format(args.results_file, args.results_format, 'csv')
    if args.results_file is not None:
        check_writable_file(args.results_file, f'bench.{fmt}', 'results to ', text=True)  # before the rounds
    rows = run_benchmark(config)
    columns = [c.format(m=args.mode) for c in SUMMARY_COLUMNS]
    write_rows([{c: row[c] for c in columns} for row in rows], 'table', stream=sys.stdout)
    if args.results_file is not None:
        write_rows(rows, fmt, args.results_file)
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        'bench', help='benchmark throughput (images/s) of models against each other',
        description=__doc__.split(':', 1)[1].strip() + ' Each round runs every model in turn (rotating the '
        'order); a model\'s figure is its median round, and its ratio is relative to the first model '
        '(the _max and _ratio_best columns use each model\'s best round, which resists other processes\' load; '
        '_round_ratio, _q1 and _q3 are the median and quartiles of the ratios round by round, each against the '
        'first model\'s round next to it, and show the machine\'s noise: list the first model twice, as in '
        '--models resnet50,srm_resnet50,resnet50, to see what two copies of one model measure). '
        'SRM models run their fast path; --reference adds a row for each on the reference path '
        '(SRM_ZOO_REFERENCE=1 runs them on the reference path only). Memory: peak CUDA memory of the steps '
        '(_peak_mem_mb) and, in training on any device, what one forward pass keeps for the backward pass '
        '(_activation_mb).',
        formatter_class=DefaultsHelpFormatter)
    parser.add_argument('--models', default='srm_resnet50,resnet50,seresnet50',
                        help='comma-separated timm model names; ratios are relative to the first')
    parser.add_argument('--mode', choices=('infer', 'train'), default='infer',
                        help='inference (forward under inference_mode) or a training step (forward, backward, SGD)')
    parser.add_argument('--device', default='cpu', help='torch device, e.g. cpu or cuda')
    parser.add_argument('--amp', choices=('bf16', 'fp16'), default=None, help='autocast dtype (default: float32)')
    parser.add_argument('--channels-last', action='store_true', help='channels_last memory format')
    parser.add_argument('--compile', action='store_true', help='torch.compile every model')
    parser.add_argument('--compile-mode', choices=COMPILE_MODES, default=None,
                        help='mode of --compile (default: torch.compile\'s); on CUDA, reduce-overhead replays each '
                        'step as CUDA graphs, so the host issues it in a few calls')
    parser.add_argument('--batch-size', '-b', type=positive_int, default=8, help='images per step')
    parser.add_argument('--img-size', type=positive_int, default=None, help='square input size (default: the model\'s)')
    parser.add_argument('--rounds', type=positive_int, default=5, help='interleaved timed rounds')
    parser.add_argument('--steps', type=positive_int, default=5, help='timed steps per model and round')
    parser.add_argument('--warmup-steps', type=positive_int, default=3,
                        help='untimed steps per model before the rounds (at least 1: the first measures peak memory '
                             'and, with --compile, compiles)')
    parser.add_argument('--reference', action='store_true',
                        help='also run each SRM model on the reference (unfused, published) SRM path')
    parser.add_argument('--threads', type=positive_int, default=None, help="CPU threads (torch.set_num_threads; default: PyTorch's)")
    parser.add_argument('--profile-steps', type=non_negative_int, default=0,
                        help='CUDA: after the rounds, profile this many steps of each model and report the GPU\'s '
                        'kernel time per step (_kernel_time, ms); well under _step_time, the step is bound by the host')
    parser.add_argument('--results-file', default=None, help='also write every column to this CSV or JSON file')
    parser.add_argument('--results-format', choices=('csv', 'json'), default=None,
                        help='format of --results-file (default: from its extension, else csv)')
    parser.set_defaults(run=run)
