"""Running one evaluation over many processes (``torchrun``): setup, exact sharding, summing counts."""
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.distributed as dist
from timm.utils.distributed import init_distributed_device_so

__all__ = ['DistContext', 'setup', 'shard_indices', 'all_sum', 'all_gather_objects', 'teardown']


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run."""
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_primary(self) -> bool:
        return self.rank == 0


def setup(device: Optional[str] = None) -> DistContext:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA) and pick the device."""
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    info = init_distributed_device_so(device=device)
    return DistContext(torch.device(info['device']), info['global_rank'], info['world_size'])


def teardown(context: DistContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard_indices(num_items: int, context: DistContext) -> List[int]:
    """This process's items: every ``world_size``-th from ``rank``, so every item is counted exactly once
    (no padding duplicates, unlike ``DistributedSampler``)."""
    return list(range(context.rank, num_items, context.world_size))


def all_sum(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """The sum of ``tensor`` over all processes (float64 sums of integer counts are exact)."""
    if not context.distributed:
        return tensor
    reduced = tensor.to(context.device if dist.get_backend() == 'nccl' else 'cpu').clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.cpu()


def all_gather_objects(value, context: DistContext) -> list:
    """``value`` from every process, in rank order."""
    if not context.distributed:
        return [value]
    gathered = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered
