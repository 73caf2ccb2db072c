"""Registers per thread of SRM's Triton kernels compiled for a GPU that need not be present (Hopper by
default), from ``ptxas -v``: how many programs fit on a multiprocessor, and so how many loads are in flight.

``python -m srm_zoo.benchmark.registers`` prints the one-kernel inference tail's registers and spills
for SRM-ResNet-50's stage shapes at batch 256 in both layouts, with and without a shortcut BatchNorm, on
the tiles the launch code picks.
"""
import argparse
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

__all__ = ['compile_kernel', 'kernel_signature', 'ptxas_usage', 'one_pass_tail_registers']

DATA_POINTERS = {'x_ptr', 'grad_ptr', 'out_ptr', 'shortcut_ptr', 'grad_x_ptr', 'grad_shortcut_ptr', 'grad_out_ptr'}
"""Pointer arguments to the activations (in the data dtype); the other pointers hold parameters or sums."""
COUNTER_POINTERS = {'norm_batches_ptr', 'srm_batches_ptr'}
"""BatchNorm's ``num_batches_tracked``, int64."""


def kernel_signature(kernel: Any, constexprs: Dict[str, Any], data: str = '*bf16', accumulate: str = '*fp32'
                     ) -> Dict[str, str]:
    """Triton signature of ``kernel`` with ``constexprs`` fixed: activations as ``data``, other pointers as
    ``accumulate``, the batch counters as int64, scalars as annotated (float64 epsilons and momenta) or i32."""
    def arg_type(param: Any) -> str:
        name = param.name
        if name in constexprs:
            return 'constexpr'
        if name in COUNTER_POINTERS:
            return '*i64'
        if name.endswith('_ptr'):
            return data if name in DATA_POINTERS else accumulate
        return param.annotation_type or 'i32'
    return {param.name: arg_type(param) for param in kernel.params}


def compile_kernel(kernel: Any, constexprs: Dict[str, Any], data: str = '*bf16', accumulate: str = '*fp32',
                   divisible: Sequence[str] = (), num_warps: int = 4, capability: int = 90) -> Any:
    """``kernel`` compiled for CUDA compute ``capability`` (no GPU needed), as :func:`kernel_signature` types
    it; pointers, and the integers named in ``divisible``, specialised as multiples of 16 (as Triton does for
    aligned tensors and such sizes)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    names = kernel.arg_names
    attrs = {(names.index(name),): [['tt.divisibility', 16]] for name in names
             if (name.endswith('_ptr') or name in divisible) and name not in constexprs}
    source = ASTSource(kernel, kernel_signature(kernel, constexprs, data, accumulate),
                       constexprs={(names.index(name),): value for name, value in constexprs.items()}, attrs=attrs)
    return triton.compile(source, target=GPUTarget('cuda', capability, 32), options=dict(num_warps=num_warps))


def _ptxas() -> str:
    """The ptxas that Triton uses: ``TRITON_PTXAS_PATH``, else the one in Triton's wheel."""
    import triton
    return os.environ.get('TRITON_PTXAS_PATH') or str(Path(triton.__file__).parent / 'backends/nvidia/bin/ptxas')


def ptxas_usage(compiled: Any, capability: int = 90) -> Tuple[int, int]:
    """(registers per thread, bytes of spill stores) of a kernel from :func:`compile_kernel`, as ``ptxas -v``
    reports them for its PTX."""
    arch = f'sm_{capability}a' if capability >= 90 else f'sm_{capability}'
    with tempfile.TemporaryDirectory() as folder:
        ptx = Path(folder) / 'kernel.ptx'
        ptx.write_text(compiled.asm['ptx'])
        report = subprocess.run([_ptxas(), '-v', f'--gpu-name={arch}', str(ptx), '-o', os.devnull],
                                capture_output=True, text=True, check=True).stderr
    registers = re.search(r'Used (\d+) registers', report)
    spills = re.search(r'(\d+) bytes spill stores', report)
    if registers is None or spills is None:
        raise RuntimeError(f'unexpected ptxas report: {report!r}')
    return int(registers.group(1)), int(spills.group(1))


def one_pass_tail_registers(channels: int, size: int, channels_last: bool, shortcut_norm: bool,
                            batch_size: int = 256, channels_per_program: Optional[int] = None
                            ) -> Dict[str, Any]:
    """Registers and spills of the one-kernel inference tail for bf16 maps (``batch_size``, ``channels``,
    ``size``, ``size``) on the launch code's tile (or ``channels_per_program`` channels), 4 warps, sm_90a."""
    from ..layers.srm_kernels import _kernels, launch
    y = torch.empty(batch_size, channels, size, size, device='meta')
    if channels_last:
        y = y.contiguous(memory_format=torch.channels_last)
    grid = launch._one_pass_grid(y, channels_per_program)
    # Triton's own specialisation of the integer arguments: 1 as a constant, multiples of 16 as such
    integers = dict(zip(grid.ARG_NAMES, grid.args))
    constexprs = dict(grid.blocks, USE_MEAN=True, USE_STD=True, SHORTCUT_NORM=shortcut_norm,
                      **{name: 1 for name, value in integers.items() if value == 1})
    divisible = [name for name, value in integers.items() if value != 1 and value % 16 == 0]
    registers, spills = ptxas_usage(compile_kernel(_kernels.folded_tail_kernel, constexprs, divisible=divisible))
    return dict(shape=f'{batch_size}x{channels}x{size}x{size}', channels_last=channels_last,
                shortcut_norm=shortcut_norm, tile=f"{grid.blocks['BLOCK_C']}x{grid.blocks['BLOCK_HW']}",
                registers=registers, spill_bytes=spills)


def _power_of_two(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a whole number') from None
    if value < 1 or value & (value - 1):
        raise argparse.ArgumentTypeError(f'{text} is not a power of two')
    return value


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m srm_zoo.benchmark.registers', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--channels-per-program', type=_power_of_two,
                        help="a program's channels, a power of two (default: the launch code's)")
    args = parser.parse_args(argv)
    from .gpu_check import STAGE_TAILS
    print('shape,channels_last,shortcut_norm,tile,registers,spill_bytes')
    for channels, size in STAGE_TAILS:
        for channels_last in (True, False):
            for shortcut_norm in (False, True):
                row = one_pass_tail_registers(channels, size, channels_last, shortcut_norm,
                                              channels_per_program=args.channels_per_program)
                print(','.join(str(value) for value in row.values()), flush=True)


if __name__ == '__main__':
    main()
