"""Activation memory of a training forward pass: the tensors autograd keeps for the backward pass."""
import itertools
from typing import Dict

import torch
import torch.nn as nn

__all__ = ['saved_activation_bytes']


def saved_activation_bytes(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Bytes of the distinct storages that ``model(*inputs)`` saves for its backward pass.

    The model's own parameters and buffers are left out where an operation saves them (a convolution
    its weight): the model holds them anyway. A storage saved by several operations (a block output
    that is also the next block's input) counts once.
    """
    held = {t.untyped_storage().data_ptr() for t in itertools.chain(model.parameters(), model.buffers())}
    storage_bytes: Dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in held:
            storage_bytes[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(*inputs)
    return sum(storage_bytes.values())
