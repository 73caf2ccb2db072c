"""The process group of a ``torchrun`` launch (NCCL on GPUs, gloo on CPUs), or a single process."""
import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist

__all__ = ['DistContext', 'init_distributed', 'close_distributed', 'all_gather_objects', 'all_reduce_sum', 'barrier']


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


def init_distributed(device: Optional[str] = None) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment (if any).

    ``device`` ``'cpu'`` forces CPU training; otherwise each process uses GPU ``LOCAL_RANK``
    when CUDA is available. The backend follows the device: NCCL for GPUs, gloo for CPUs.
    """
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    use_cuda = torch.cuda.is_available() and device != 'cpu'
    if use_cuda:
        torch_device = torch.device('cuda', local_rank)
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


def all_gather_objects(obj: Any, ctx: DistContext) -> List[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
    if not ctx.distributed:
        return [obj]
    gathered: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise sum of ``values`` over all ranks."""
    if ctx.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
