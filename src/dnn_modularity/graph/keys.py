"""int64 sort keys that reproduce ``heapq.nlargest``'s order with unordered ``topk`` calls.

A candidate neighbour (float32 similarity v, column j) becomes one int64: v mapped to an
order-preserving integer in the high 32 bits, and 2³² − 1 − j in the low 32 bits. Keys are unique
per column and compare exactly like heapq's (value descending, then lower index first), so the k
largest keys of any union of candidate sets are the official algorithm's k neighbours.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

LOW32 = 0xFFFFFFFF
_HIGH = 1 << 32
INT64_MIN = -(2**63)
"""Placeholder key smaller than every real key (an empty slot)."""
MAX_INDEX = 2**31 - 1
"""Largest column index a key can hold."""


def sort_keys(values: Tensor, indices: Tensor) -> Tensor:
    """Encode (similarity, column) candidates as unique int64 keys in heapq.nlargest order.

    A larger key means "picked first": larger float32 value, and among equal values (``-0.0``
    equals ``0.0``) the lower column index.

    Args:
        values: float32 (or lower precision) similarities, any shape.
        indices: Column indices (int64, 0 <= index < 2³¹), broadcastable to ``values``.

    Returns:
        int64 keys of the broadcast shape.
    """
    v = values.to(torch.float32) + 0.0  # a fresh tensor, and -0.0 + 0.0 = +0.0
    bits = v.view(torch.int32)
    # IEEE floats order like sign-magnitude integers: flip the magnitude bits of negatives.
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    return ordered * _HIGH + (LOW32 - indices)


def sort_keys_numpy(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """:func:`sort_keys` for numpy arrays (the CPU dense route's selection runs in numpy).

    Args:
        values: float32 similarities, any shape.
        indices: Column indices (int64, 0 <= index < 2³¹), broadcastable to ``values``.

    Returns:
        int64 keys of the broadcast shape, equal to :func:`sort_keys` of the same inputs.
    """
    return ordered_bits_numpy(values) * _HIGH + (LOW32 - np.asarray(indices, dtype=np.int64))


def ordered_bits_numpy(values: np.ndarray) -> np.ndarray:
    """int64 integers in the order of the float32 ``values`` (-0.0 and +0.0 equal), any shape.

    The value part of :func:`sort_keys_numpy`: IEEE floats order like sign-magnitude integers, so
    the magnitude bits of negatives are flipped. Values in [-2³¹, 2³¹).
    """
    v = values.astype(np.float32) + np.float32(0.0)  # a fresh array, and -0.0 + 0.0 = +0.0
    bits = v.view(np.int32)
    return np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits).astype(np.int64)


def decode_keys(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Invert :func:`sort_keys`: return ``(values float32, indices int64)``."""
    low = keys & LOW32
    indices = LOW32 - low
    ordered = keys >> 32
    bits = torch.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered).to(torch.int32)
    return bits.view(torch.float32), indices


def decode_keys_numpy(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode_keys` for a numpy int64 array: ``(values float32, indices int64)``."""
    indices = LOW32 - (keys & LOW32)
    ordered = keys >> 32
    bits = np.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered).astype(np.int32)
    return bits.view(np.float32), indices
