"""Activation memory of a training forward pass: the tensors autograd keeps for the backward pass."""
import itertools
from typing import Dict, Set

import torch
import torch.nn as nn

__all__ = ['saved_activation_bytes']


def _parameter_copy(tensor: torch.Tensor, held: Set[int]) -> bool:
    """Whether ``tensor`` is a copy in another dtype (``tensor.to(dtype)``, as autocast casts a weight) of a
    tensor whose storage is in ``held``: the autograd node that made it leads straight to that leaf."""
    node = tensor.grad_fn
    if node is None or node.name() != 'ToCopyBackward0':
        return False
    leaves = (getattr(next_node, 'variable', None) for next_node, _ in node.next_functions)
    return any(leaf is not None and leaf.untyped_storage().data_ptr() in held for leaf in leaves)


def saved_activation_bytes(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Bytes of the distinct storages that ``model(*inputs)`` saves for its backward pass.

    The model's own parameters and buffers are left out where an operation saves them (a convolution
    its weight): the model holds them anyway. So are the copies of its parameters in another dtype
    that autocast makes and a convolution saves in their place (they are weights, not activations). A
    storage saved by several operations (a block output that is also the next block's input) counts once.
    """
    held = {t.untyped_storage().data_ptr() for t in itertools.chain(model.parameters(), model.buffers())}
    storage_bytes: Dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in held and not _parameter_copy(tensor, held):
            storage_bytes[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(*inputs)
    return sum(storage_bytes.values())
