"""The process group of a ``torchrun`` launch (NCCL on GPUs, gloo on CPUs), or a single process.

Shared by evaluation and training: joining and leaving the group, exact sharding (every item
counted once, no padding duplicates) and the few collectives they need.
"""
import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist

from .errors import UserError

__all__ = ['DistContext', 'parse_device', 'check_device', 'uses_cuda', 'init_distributed', 'close_distributed',
           'shard_indices', 'all_sum', 'all_reduce_sum', 'all_gather_objects', 'broadcast_object', 'barrier']


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: its rank, the number of processes and its device."""
    rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def parse_device(device: str) -> torch.device:
    """``device`` as a torch device; a UserError when it names none, or CUDA where PyTorch sees no GPU."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f'--device {device}: unknown device; use cpu, cuda or cuda:INDEX.') from None
    if parsed.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f'--device {device}: CUDA is not available (PyTorch sees no CUDA device here); use --device '
                        f'cpu.')
    return parsed


def check_device(device: Optional[str], world_size: int = 1) -> Optional[torch.device]:
    """``device`` parsed (None for None); a UserError for a ``--device`` that would not be used: not a device
    (see :func:`parse_device`), neither cpu nor cuda, or (single process) a GPU index past the last GPU."""
    if device is None:
        return None
    parsed = parse_device(device)
    if parsed.type not in ('cpu', 'cuda'):
        raise UserError(f'--device {device}: srm-zoo runs on cpu or cuda only.')
    if parsed.type == 'cuda' and world_size == 1 and (parsed.index or 0) >= torch.cuda.device_count():
        raise UserError(f'--device {device}: there are only {torch.cuda.device_count()} CUDA devices.')
    return parsed


def uses_cuda(device: Optional[str] = None) -> bool:
    """Whether a run given ``device`` (``--device``; None: CUDA when available) runs on CUDA."""
    return torch.cuda.is_available() and not (device or '').startswith('cpu')


def init_distributed(device: Optional[str] = None) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment (if any).

    ``device`` ``'cpu'`` forces the CPU; otherwise each process uses GPU ``LOCAL_RANK`` when CUDA
    is available (a single process may name its GPU, e.g. ``'cuda:1'``). The backend follows the
    device: NCCL for GPUs, gloo for CPUs. A device that cannot be used is a UserError.
    """
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    check_device(device, world_size)
    use_cuda = uses_cuda(device)
    if use_cuda:
        named = torch.device(device) if device and device.startswith('cuda') else None
        torch_device = torch.device('cuda', local_rank if world_size > 1 or named is None or named.index is None
                                    else named.index)
        torch.cuda.set_device(torch_device)
    else:
        torch_device = torch.device('cpu')
    rank = 0
    if world_size > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend='nccl' if use_cuda else 'gloo', device_id=torch_device if use_cuda else None)
        rank = dist.get_rank()
    return DistContext(rank=rank, world_size=world_size, device=torch_device)


def close_distributed(ctx: DistContext) -> None:
    """Leave the process group."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard_indices(num_items: int, ctx: DistContext) -> List[int]:
    """This process's items: every ``world_size``-th from ``rank``, so every item is counted exactly once
    (no padding duplicates, unlike ``DistributedSampler``)."""
    return list(range(ctx.rank, num_items, ctx.world_size))


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise sum of ``values`` over all ranks, in place (``values`` on the backend's device)."""
    if ctx.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """A CPU copy of the sum of ``tensor`` over all ranks (float64 sums of integer counts are exact)."""
    if not ctx.distributed:
        return tensor
    reduced = tensor.to(ctx.device if dist.get_backend() == 'nccl' else 'cpu').clone()
    return all_reduce_sum(reduced, ctx).cpu()


def all_gather_objects(obj: Any, ctx: DistContext) -> List[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
    if not ctx.distributed:
        return [obj]
    gathered: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself in a single process)."""
    if not ctx.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier(ctx: DistContext) -> None:
    """Wait for every rank."""
    if ctx.distributed:
        dist.barrier()
