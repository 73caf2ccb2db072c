"""The GPU's kernel time per step, from ``torch.profiler``: set against the step's wall time, it tells a
step bound by the GPU from one bound by the host's launches."""
from typing import Any, Callable, Iterable, Optional

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

__all__ = ['kernel_time_ms', 'profile_kernel_time']


def kernel_time_ms(events: Iterable[Any]) -> float:
    """Total time (ms) of the CUDA kernels among profiler events (rows of ``key_averages()``)."""
    return sum(event.self_device_time_total for event in events if event.device_type == DeviceType.CUDA) / 1e3


def profile_kernel_time(step: Callable[[], None], steps: int, device: torch.device) -> Optional[float]:
    """The GPU's kernel time (ms) per step of ``step``, over ``steps`` profiled steps; None where the
    profiler recorded no kernel (a PyTorch built without CUPTI)."""
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize(device)
    events = prof.key_averages()
    if not any(event.device_type == DeviceType.CUDA for event in events):
        return None
    return kernel_time_ms(events) / steps
