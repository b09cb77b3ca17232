"""Make advertorch 0.2.3 importable on current torch — the one place that knows about it.

advertorch 0.2.3 (the version paper 1 used, Sec. 4.2) does
``from torch.autograd.gradcheck import zero_gradients`` at import time
(``advertorch/attacks/fast_adaptive_boundary.py``). torch removed that private helper in 1.9,
so ``import advertorch`` fails with ``ImportError: cannot import name 'zero_gradients'``.
Putting a faithful copy of the old helper back on ``torch.autograd.gradcheck`` *before* the
import is enough: nothing else in advertorch depends on removed torch APIs (all six attacks used
here were checked, see ``tests/unit/test_attacks.py``).

Always import advertorch through :func:`import_advertorch`; never ``import advertorch`` directly.
"""

from __future__ import annotations

import collections.abc
import importlib
from types import ModuleType
from typing import Any

import torch

# Not `import torch.autograd.gradcheck as ...`: that name resolves to the *function*
# torch.autograd.gradcheck, which shadows the module of the same name.
_gradcheck = importlib.import_module("torch.autograd.gradcheck")


def zero_gradients(x: Any) -> None:
    """Zero the ``.grad`` of a tensor or of every tensor in a (nested) iterable, in place.

    Copy of the helper torch < 1.9 had in ``torch.autograd.gradcheck`` (advertorch's FAB
    attack calls it between backward passes).

    Args:
        x: A tensor, or an iterable of tensors / iterables.
    """
    if isinstance(x, torch.Tensor):
        if x.grad is not None:
            x.grad.detach_()
            x.grad.zero_()
    elif isinstance(x, collections.abc.Iterable):
        for elem in x:
            zero_gradients(elem)


def patch_torch() -> bool:
    """Install :func:`zero_gradients` on ``torch.autograd.gradcheck`` if torch lacks it.

    Returns:
        True if the attribute was added now, False if torch already had one (old torch, or
        already patched) — an existing attribute is never replaced.
    """
    if hasattr(_gradcheck, "zero_gradients"):
        return False
    _gradcheck.zero_gradients = zero_gradients  # type: ignore[attr-defined]
    return True


def import_advertorch() -> ModuleType:
    """Import and return ``advertorch.attacks`` after applying the torch compatibility patch.

    Returns:
        The ``advertorch.attacks`` module.

    Raises:
        ImportError: advertorch is not installed (it is a dependency of this package).
    """
    patch_torch()
    return importlib.import_module("advertorch.attacks")
