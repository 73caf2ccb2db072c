"""Interleaved throughput benchmark of several models in one process.

Every model (and, on request, each SRM model again on its reference path) runs one timed round
in turn, the order rotating from round to round, so that drifts in clock speed, temperature and
other processes' load spread over all models alike. A model's throughput is its median round; its
ratio to the first model is given both as the ratio of the two medians and round by round (each round's
ratio to the first model's round next to it), as the median and quartiles of those round ratios, which
show how far the machine's noise reaches.
"""
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn
from timm.models import get_arch_pretrained_cfgs
from timm.optim import create_optimizer_v2

from ..compiling import check_compile_mode, cudagraph_skips, describe_skips
from ..distributed import check_device
from ..errors import UserError, unknown_model_message
from ..layers import SRM, reference_enabled, use_reference
from ..stats import model_stats
from .kernel_time import profile_kernel_time
from .memory import saved_activation_bytes

__all__ = ['BenchConfig', 'ModelVariant', 'round_ratios', 'run_benchmark']

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


@dataclass
class BenchConfig:
    """What to run and how."""
    models: Sequence[str]
    mode: str = 'infer'
    device: str = 'cpu'
    amp: Optional[str] = None
    channels_last: bool = False
    compile: bool = False
    compile_mode: Optional[str] = None
    batch_size: int = 8
    img_size: Optional[int] = None
    rounds: int = 5
    steps: int = 5
    warmup_steps: int = 3
    reference: bool = False
    threads: Optional[int] = None
    profile_steps: int = 0


@dataclass
class ModelVariant:
    """One benchmarked model: a timm model on the fast or the reference SRM path.

    ``peak_mem_mb`` (CUDA only) is the most memory its steps allocated above what was allocated
    before them: activations, gradients and optimizer state, not the weights. ``activation_mb``
    (training, any device) is what one eager forward pass keeps for the backward pass.
    ``kernel_time_ms`` (CUDA, on request) is the GPU's kernel time per step. ``cudagraph_skips`` (compiled
    runs) counts the graphs that Inductor compiled without the CUDA graphs their mode asked for.
    """
    name: str
    srm_path: Optional[str]
    model: nn.Module
    step: Callable[[], None]
    measure_activations: Optional[Callable[[], int]] = None
    round_rates: List[float] = field(default_factory=list)
    peak_mem_mb: Optional[float] = None
    activation_mb: Optional[float] = None
    kernel_time_ms: Optional[float] = None
    cudagraph_skips: Optional[int] = None

    @property
    def label(self) -> str:
        return f'{self.name} ({self.srm_path})' if self.srm_path == 'reference' else self.name

    def path_context(self):
        return use_reference(self.srm_path == 'reference') if self.srm_path else nullcontext()


def _validate(config: BenchConfig) -> torch.device:
    if config.mode not in ('infer', 'train'):
        raise UserError(f'Unknown mode {config.mode!r}: use "infer" or "train".')
    if config.amp is not None and config.amp not in AMP_DTYPES:
        raise UserError(f'Unknown --amp {config.amp!r}: use one of {", ".join(AMP_DTYPES)}.')
    if min(config.batch_size, config.rounds, config.steps, config.warmup_steps) < 1:
        raise UserError('--batch-size, --rounds, --steps and --warmup-steps must be at least 1.')
    if (config.img_size is not None and config.img_size < 1) or (config.threads is not None and config.threads < 1):
        raise UserError('--img-size and --threads must be at least 1 where given.')
    check_compile_mode(config.compile, config.compile_mode)
    if config.profile_steps < 0:
        raise UserError('--profile-steps must be at least 0.')
    if config.mode == 'train' and config.batch_size < 2:
        raise UserError('Training needs a batch of at least 2 (BatchNorm statistics over one sample do not exist).')
    device = check_device(config.device)
    if config.profile_steps and device.type != 'cuda':
        raise UserError('--profile-steps measures the GPU\'s kernel time: it needs --device cuda.')
    if not config.models:
        raise UserError('No model given: pass --models, e.g. --models srm_resnet50,resnet50.')
    for name in config.models:
        _check_model_name(name)
    return device


def _check_model_name(name: str) -> None:
    """Refuse a name that timm cannot create: an unknown architecture, or a pretrained tag timm does not
    know for it (``arch.tag`` takes the tag's configuration, e.g. its input size)."""
    arch, _, tag = name.partition('.')
    if not timm.is_model(arch):
        raise UserError(unknown_model_message(name))
    if not tag:
        return
    tagged = list(get_arch_pretrained_cfgs(arch))  # every tag, with published weights or not
    if name not in tagged:
        known = ', '.join(t.partition('.')[2] for t in tagged) or 'none'
        raise UserError(f'Unknown pretrained tag {tag!r} for {arch} (timm knows: {known}); or name the architecture '
                        f'alone, {arch}.')


def _has_srm(model: nn.Module) -> bool:
    return any(isinstance(m, SRM) for m in model.modules())


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _make_step(model: nn.Module, config: BenchConfig, device: torch.device, input_size
               ) -> Tuple[Callable[[], None], Optional[Callable[[], int]]]:
    """The timed step and, in training, a measure of the activations its forward pass saves."""
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    x = torch.randn(config.batch_size, *input_size, device=device).contiguous(memory_format=memory_format)
    # one reusable context for every step (torch.autocast and nullcontext may be entered again)
    autocast = torch.autocast(device.type, dtype=AMP_DTYPES[config.amp]) if config.amp else nullcontext()
    forward = torch.compile(model, mode=config.compile_mode) if config.compile else model
    if config.mode == 'infer':
        model.eval()

        def step() -> None:
            if config.compile:  # a new generation of CUDA graphs, whose outputs the next replay may overwrite
                torch.compiler.cudagraph_mark_step_begin()
            with torch.inference_mode(), autocast:
                forward(x)
        return step, None

    model.train()
    optimizer = create_optimizer_v2(model, 'sgd', lr=1e-4, momentum=0.9)
    target = torch.randint(0, model.num_classes or 1, (config.batch_size,), device=device)
    criterion = nn.CrossEntropyLoss()

    def step() -> None:
        if config.compile:
            torch.compiler.cudagraph_mark_step_begin()
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = criterion(forward(x), target)
        loss.backward()
        optimizer.step()

    def measure_activations() -> int:
        with autocast:
            return saved_activation_bytes(model, x)
    return step, measure_activations


def _srm_paths(with_reference: bool) -> List[str]:
    """The SRM paths an SRM model runs on: the fast path, and the reference path too ``with_reference``;
    only the reference path where ``SRM_ZOO_REFERENCE`` (or :func:`use_reference`) forces it."""
    if reference_enabled():
        return ['reference']
    return ['fast', 'reference'] if with_reference else ['fast']


def _build_variants(config: BenchConfig, device: torch.device) -> List[ModelVariant]:
    variants = []
    for name in config.models:
        model = timm.create_model(name)
        paths = [None]
        if _has_srm(model):
            paths = _srm_paths(config.reference)
        for idx, path in enumerate(paths):
            model = (model if idx == 0 else timm.create_model(name)).to(device)
            if config.channels_last:
                model = model.to(memory_format=torch.channels_last)
            input_size = (3, config.img_size, config.img_size) if config.img_size else model.pretrained_cfg['input_size']
            variants.append(ModelVariant(name, path, model, *_make_step(model, config, device, input_size)))
    return variants


def _timed_round(variant: ModelVariant, steps: int, batch_size: int, device: torch.device) -> float:
    with variant.path_context():
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            variant.step()
        _synchronize(device)
    return steps * batch_size / (time.perf_counter() - start)


def _warm_up(variant: ModelVariant, steps: int, device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with variant.path_context():
        for _ in range(steps):
            variant.step()
        if variant.measure_activations is not None:
            variant.activation_mb = variant.measure_activations() / 2 ** 20
    _synchronize(device)
    if device.type == 'cuda':
        variant.peak_mem_mb = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20


def _warm_up_compiled(variant: ModelVariant, steps: int, device: torch.device, log: Callable[[str], None]) -> None:
    """:func:`_warm_up` of a compiled model, which compiles in its first steps, counting the graphs Inductor
    compiled without the CUDA graphs their mode asked for."""
    skips_before = cudagraph_skips()
    _warm_up(variant, steps, device)
    variant.cudagraph_skips = cudagraph_skips() - skips_before
    if variant.cudagraph_skips:
        log(f'{variant.label}: {describe_skips(variant.cudagraph_skips)}')


def run_benchmark(config: BenchConfig, log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)
                  ) -> List[Dict[str, Any]]:
    """Benchmark ``config.models`` in interleaved rounds; one row per model (and SRM path)."""
    device = _validate(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(0)
    if config.compile:
        # compile afresh: earlier runs in this process would count towards the recompile limit and, at
        # another batch size, make the compiler mark the batch dimension dynamic
        torch.compiler.reset()
    variants = _build_variants(config, device)
    for variant in variants:
        log(f'warming up {variant.label}')
        if config.compile:
            _warm_up_compiled(variant, config.warmup_steps, device, log)
        else:
            _warm_up(variant, config.warmup_steps, device)
    for round_idx in range(config.rounds):
        shift = round_idx % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            variant.round_rates.append(_timed_round(variant, config.steps, config.batch_size, device))
        log(f'round {round_idx + 1}/{config.rounds}: ' + ', '.join(
            f'{v.label} {v.round_rates[-1]:.1f}' for v in variants) + ' img/s')
    if config.profile_steps:
        for variant in variants:
            log(f'profiling {variant.label}')
            with variant.path_context():
                try:
                    variant.kernel_time_ms = profile_kernel_time(variant.step, config.profile_steps, device)
                except RuntimeError as error:  # the throughput already measured still counts
                    log(f'profiling {variant.label} failed: {error}')
    return _rows(config, variants)


def round_ratios(rates: Sequence[float], first_rates: Sequence[float]) -> List[float]:
    """A model's rates round by round over the first model's rate in the same round."""
    return [rate / first for rate, first in zip(rates, first_rates)]


def _round_ratio_quartiles(rates: Sequence[float], first_rates: Sequence[float]) -> Tuple[float, float, float]:
    """First quartile, median and third quartile of the round-by-round ratios (:func:`round_ratios`)."""
    ratios = round_ratios(rates, first_rates)
    if len(ratios) == 1:
        return ratios[0], ratios[0], ratios[0]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method='inclusive')
    return q1, median, q3


def _rows(config: BenchConfig, variants: List[ModelVariant]) -> List[Dict[str, Any]]:
    prefix = config.mode
    first_rates = variants[0].round_rates
    first_rate = statistics.median(first_rates)
    first_best = max(first_rates)
    rows, stats_of = [], {}
    for variant in variants:
        rate = statistics.median(variant.round_rates)
        ratio_q1, ratio_median, ratio_q3 = _round_ratio_quartiles(variant.round_rates, first_rates)
        img_size = config.img_size or variant.model.pretrained_cfg['input_size'][-1]
        if variant.name not in stats_of:  # an SRM model's fast and reference rows share them
            stats_of[variant.name] = model_stats(variant.name, input_size=(3, img_size, img_size))
        stats = stats_of[variant.name]
        rows.append({
            'model': variant.name,
            'srm_path': variant.srm_path or '',
            f'{prefix}_samples_per_sec': round(rate, 2),
            f'{prefix}_ratio': round(rate / first_rate, 4),
            f'{prefix}_ratio_best': round(max(variant.round_rates) / first_best, 4),
            f'{prefix}_round_ratio': round(ratio_median, 4),
            f'{prefix}_round_ratio_q1': round(ratio_q1, 4),
            f'{prefix}_round_ratio_q3': round(ratio_q3, 4),
            f'{prefix}_step_time': round(1e3 * config.batch_size / rate, 3),
            f'{prefix}_samples_per_sec_min': round(min(variant.round_rates), 2),
            f'{prefix}_samples_per_sec_max': round(max(variant.round_rates), 2),
            f'{prefix}_batch_size': config.batch_size,
            f'{prefix}_img_size': img_size,
            f'{prefix}_peak_mem_mb': None if variant.peak_mem_mb is None else round(variant.peak_mem_mb, 1),
            f'{prefix}_activation_mb': None if variant.activation_mb is None else round(variant.activation_mb, 1),
            f'{prefix}_kernel_time': None if variant.kernel_time_ms is None else round(variant.kernel_time_ms, 3),
            f'{prefix}_gmacs': round(stats.gmacs, 3),
            'param_count': round(stats.params_m, 3),
            'device': config.device,
            'amp': config.amp or 'float32',
            'channels_last': config.channels_last,
            'compile': config.compile,
            'compile_mode': (config.compile_mode or 'default') if config.compile else '',
            'cudagraph_skips': variant.cudagraph_skips,
            'rounds': config.rounds,
            f'{prefix}_round_samples_per_sec': [round(r, 2) for r in variant.round_rates],
        })
    return rows
