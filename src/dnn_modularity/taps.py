r"""Layer taps: reading the per-layer features that paper 1 builds its k-NN graphs from.

This is the only module that touches forward hooks. A *tap* is a module whose output, flattened
per sample to a row, is one "layer" of the analyses (paper 1 Sec. 3.2: ``X_l`` of shape
(N, C_l·H_l·W_l)). Taps are chosen by

- a tap mode, ``"block"`` (default) or ``"official"``: the model's own declaration
  (``model.tap_points(mode)``, see :data:`dnn_modularity.models.TAP_MODES`);
- a list of module names (``["layer1.0", "layer2.3"]``) or one name, in the order given;
- ``"re:<regex>"``: every module whose name matches the regex entirely (``re.fullmatch``), in
  module order, e.g. ``"re:layer3\.\d+"``;
- a selector, in module order: ``"residual_blocks"``, ``"relu"``, ``"conv"``, ``"linear"``,
  ``"bn"``, ``"pool"``, ``"activations"``, ``"leaves"`` (see :data:`SELECTORS`); these work on any
  torch model.

Names are module paths inside the *bare* network: wrappers are looked through first —
``DistributedDataParallel``/``DataParallel`` (``.module``), ``torch.compile`` (``._orig_mod``),
Lightning's strategy wrappers (``._forward_module``), :class:`~dnn_modularity.models.Normalized`
(``.net``) and any module without taps of its own that holds a tapped network as ``.net`` (such
as the Lightning ``ImageClassifier``).

Two ways to read features:

- :class:`LayerTaps`, a context manager: every forward pass inside it appends the tapped outputs;
  all layers of all samples are kept. Memory: ``N × Σ_l D_l × itemsize`` bytes, where
  ``D_l = C_l·H_l·W_l`` (see :func:`feature_dims`). CIFAR ResNet-56 block taps have
  Σ D_l = 274,432, so N = 10,000 samples take 11 GB in float32 and 5.5 GB in float16/bfloat16.
- :func:`iter_layer_features`: one layer at a time, ``N × D_l × itemsize`` bytes at most (ResNet-56:
  ≤ 655 MB for N = 10,000 in float32), at the price of re-running the batches for every layer;
  each forward pass stops right after the tapped module, so the compute is about L/2 full
  passes for L layers.

Either way the forward pass itself needs the usual activation memory of one batch (under
``torch.no_grad()`` only a couple of activations at a time); ``dtype`` (e.g. ``torch.float16``)
and ``to_cpu=True`` (move each batch's features off the GPU right away) bound what is stored.

Over 500 lines: the only module that touches forward hooks; tap resolution, `LayerTaps` and the per-
layer feature iterator share its hook plumbing.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.pooling import (
    _AdaptiveAvgPoolNd,
    _AdaptiveMaxPoolNd,
    _AvgPoolNd,
    _MaxPoolNd,
)
from torch.utils.hooks import RemovableHandle

from dnn_modularity.models._base import ACTIVATIONS, TAP_MODES
from dnn_modularity.models.unwrap import eval_mode as _eval_mode
from dnn_modularity.models.unwrap import (
    module_device,
    strip_runtime_wrappers,
    unwrap_model,
)

__all__ = [
    "SELECTORS",
    "TAP_MODES",
    "LayerTaps",
    "TapPoint",
    "feature_dims",
    "iter_layer_features",
    "resolve_taps",
    "unwrap_model",
]

Taps = str | Sequence[str]
"""A tap mode, ``"re:<regex>"``, a selector, one module name, or a list of module names."""


@dataclass(frozen=True)
class TapPoint:
    """One tapped layer.

    Attributes:
        index: 1-based position in the full tap list of the chosen mode (``layer_07`` is 7), kept
            when ``layers=`` selects a subset.
        name: module path inside the bare network, e.g. ``"layer2.3"``.
        module: the module whose output is read.
    """

    index: int
    name: str
    module: nn.Module = field(repr=False, compare=False)


_RESIDUAL_CLASS = re.compile(r"(Block|Bottleneck|InvertedResidual)", re.IGNORECASE)
_ACTIVATIONS = (*ACTIVATIONS, nn.Sigmoid, nn.Tanh)

SELECTORS: dict[str, Callable[[str, nn.Module], bool]] = {
    # Class names of this package's, torchvision's and timm's residual blocks.
    "residual_blocks": lambda name, m: bool(_RESIDUAL_CLASS.search(type(m).__name__)),
    "relu": lambda name, m: isinstance(m, nn.ReLU | nn.ReLU6),
    "activations": lambda name, m: isinstance(m, _ACTIVATIONS),
    "conv": lambda name, m: isinstance(m, _ConvNd),
    "linear": lambda name, m: isinstance(m, nn.Linear),
    "bn": lambda name, m: isinstance(m, _BatchNorm),
    "pool": lambda name, m: isinstance(
        m, _MaxPoolNd | _AvgPoolNd | _AdaptiveAvgPoolNd | _AdaptiveMaxPoolNd
    ),
    "leaves": lambda name, m: next(iter(m.children()), None) is None,
}
"""Selectors: name -> predicate ``(module name, module) -> bool`` over ``named_modules()``."""


# ------------------------------------------------------------------------------------------
# Unwrapping
# ------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------
# Resolving taps
# ------------------------------------------------------------------------------------------
def _describe_names(names: list[str], wanted: Sequence[str] = (), limit: int = 60) -> str:
    close = sorted({c for w in wanted for c in difflib.get_close_matches(w, names, n=3)})
    shown = names if len(names) <= limit else [*names[:limit], f"... ({len(names) - limit} more)"]
    hint = f"; did you mean {close}?" if close else ""
    return f"available module names: {shown}{hint}"


def resolve_taps(
    model: nn.Module,
    taps: Taps = "block",
    *,
    layers: Sequence[int | str] | None = None,
) -> list[TapPoint]:
    """Resolve a tap specification to ordered :class:`TapPoint`s.

    Args:
        model: any torch model; wrappers are looked through (:func:`unwrap_model`).
        taps: ``"block"`` | ``"official"`` (the model's declared taps), a list of module names
            (in the given order), one module name, ``"re:<regex>"`` (``re.fullmatch`` over module
            names) or a selector from :data:`SELECTORS`.
        layers: optional subset of the resolved taps, by 1-based index or by name; the points
            keep their index in the full list.

    Returns:
        The tap points, in forward order for modes, regexes and selectors.

    Raises:
        ValueError: unknown module names (the available ones are listed, with close matches),
            a regex or selector matching nothing, a tap mode on a model without declared taps,
            duplicate names, or a bad ``layers`` entry.
    """
    root = unwrap_model(model)
    named: list[tuple[str, nn.Module]]
    if isinstance(taps, str) and taps in TAP_MODES:
        if not hasattr(root, "tap_points"):
            raise ValueError(
                f"{type(root).__name__} declares no tap points, so tap mode {taps!r} is "
                "unavailable; "
                f"use module names, 're:<regex>' or a selector {sorted(SELECTORS)} "
                "(dnn_modularity.models.default_block_taps(model) proposes one name per block)"
            )
        named = list(root.tap_points(taps))
    elif isinstance(taps, str) and taps.startswith("re:"):
        pattern = re.compile(taps[3:])
        named = [(n, m) for n, m in root.named_modules() if n and pattern.fullmatch(n)]
        if not named:
            all_names = [n for n, _ in root.named_modules() if n]
            raise ValueError(
                f"regex {taps[3:]!r} matches no module name; {_describe_names(all_names)}"
            )
    elif isinstance(taps, str) and taps in SELECTORS:
        pred = SELECTORS[taps]
        named = [(n, m) for n, m in root.named_modules() if n and pred(n, m)]
        if not named:
            raise ValueError(
                f"selector {taps!r} matches no module of {type(root).__name__}; "
                f"selectors: {sorted(SELECTORS)}"
            )
    elif isinstance(taps, str) or (
        isinstance(taps, Sequence) and all(isinstance(t, str) for t in taps)
    ):
        wanted = [taps] if isinstance(taps, str) else list(taps)
        if not wanted:
            raise ValueError("empty list of tap names")
        modules = dict(root.named_modules())
        modules.pop("", None)
        unknown = [w for w in wanted if w not in modules]
        if unknown:
            extra = (
                f" (tap modes: {list(TAP_MODES)}, selectors: {sorted(SELECTORS)}, or 're:<regex>')"
                if isinstance(taps, str)
                else ""
            )
            raise ValueError(
                f"unknown tap {unknown if len(unknown) > 1 else unknown[0]!r}{extra}; "
                f"{_describe_names(list(modules), unknown)}"
            )
        named = [(w, modules[w]) for w in wanted]
    else:
        raise ValueError(
            f"taps must be a tap mode {list(TAP_MODES)}, a selector {sorted(SELECTORS)}, "
            f"'re:<regex>', a module name or a list of module names; got {taps!r}"
        )
    names = [n for n, _ in named]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate taps {dupes}")
    points = [TapPoint(i, n, m) for i, (n, m) in enumerate(named, start=1)]
    return _select_layers(points, layers) if layers is not None else points


def _select_layers(points: list[TapPoint], layers: Sequence[int | str]) -> list[TapPoint]:
    by_name = {p.name: p for p in points}
    chosen: list[TapPoint] = []
    for item in layers:
        if isinstance(item, str) and item in by_name:
            chosen.append(by_name[item])
        elif isinstance(item, int) and not isinstance(item, bool) and 1 <= item <= len(points):
            chosen.append(points[item - 1])
        else:
            raise ValueError(
                f"layers entry {item!r} is neither an index in 1..{len(points)} nor a tap name "
                f"{[p.name for p in points]}"
            )
    if len({p.index for p in chosen}) != len(chosen):
        raise ValueError(f"layers {list(layers)!r} selects a layer twice")
    return sorted(chosen, key=lambda p: p.index)


# ------------------------------------------------------------------------------------------
# Reading features
# ------------------------------------------------------------------------------------------
def _as_tensor(output: Any, name: str) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(f"tap {name!r} returned {type(output).__name__}, not a tensor")


def _rows(output: Any, name: str, dtype: torch.dtype | None, to_cpu: bool) -> Tensor:
    """(B, ...) -> detached (B, D) copy; a copy because later in-place ops may change ``output``."""
    out = _as_tensor(output, name).detach()
    rows = out.reshape(out.shape[0], -1)
    # A strided output (e.g. channels_last) is already copied by the reshape: no second copy.
    fresh = rows.numel() > 0 and rows.data_ptr() != out.data_ptr()
    return rows.to(device=torch.device("cpu") if to_cpu else None, dtype=dtype, copy=not fresh)


class LayerTaps:
    """Context manager collecting the tapped layers' features of every forward pass inside it.

    Example::

        with LayerTaps(model, "block") as taps:
            for x in loader:
                model(x)
        feats = taps.features  # OrderedDict name -> (N, D)

    Each forward pass of the bare network contributes one batch of rows to every layer. When a
    tapped module runs several times in one pass (a module reused in the forward, e.g.
    torchvision Bottleneck's shared ``relu``), only its first output is kept, as
    :func:`iter_layer_features` does, and a warning is issued once. A pass that raises
    contributes nothing. Hooks are removed on exit, also when the body raises.

    Memory: all layers of all samples are kept, ``N × Σ_l D_l × itemsize`` bytes
    (:func:`feature_dims` gives the D_l); prefer :func:`iter_layer_features` for large N.

    Args:
        model: any torch model (wrappers are looked through, see :func:`unwrap_model`); call it
            (or the wrapper) as usual inside the context. Its train/eval mode is left alone.
        taps: see :func:`resolve_taps`.
        layers: optional subset (1-based indices or names), see :func:`resolve_taps`.
        dtype: store features in this dtype (e.g. ``torch.float16``); None keeps the output's.
        to_cpu: move features to CPU as they are produced.

    Attributes:
        points: the resolved :class:`TapPoint` list.
    """

    def __init__(
        self,
        model: nn.Module,
        taps: Taps = "block",
        *,
        layers: Sequence[int | str] | None = None,
        dtype: torch.dtype | None = None,
        to_cpu: bool = False,
    ) -> None:
        self.points = resolve_taps(model, taps, layers=layers)
        self.dtype = dtype
        self.to_cpu = to_cpu
        self._root = unwrap_model(model)
        self._handles: list[RemovableHandle] = []
        self._store: dict[str, list[Tensor]] = {p.name: [] for p in self.points}
        self._pending: dict[str, Tensor] | None = None
        self._warned_reuse = False

    # -- hooks ------------------------------------------------------------------------------
    def _start_pass(self, module: nn.Module, args: Any) -> None:
        self._pending = {}

    def _end_pass(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._pending is not None:
            for name, rows in self._pending.items():
                self._store[name].append(rows)
        self._pending = None

    def _make_hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self._pending is None:  # a submodule called on its own: no pass to group by
                self._store[name].append(_rows(output, name, self.dtype, self.to_cpu))
            elif name in self._pending:
                if not self._warned_reuse:
                    warnings.warn(
                        f"tap {name!r} ran more than once in one forward pass; keeping its first "
                        "output (tap a module that is called once to avoid this)",
                        stacklevel=2,
                    )
                    self._warned_reuse = True
            else:
                self._pending[name] = _rows(output, name, self.dtype, self.to_cpu)

        return hook

    def __enter__(self) -> LayerTaps:
        if self._handles:
            raise RuntimeError("LayerTaps is already active; it is not re-entrant")
        try:
            self._handles.append(self._root.register_forward_pre_hook(self._start_pass))
            self._handles.append(self._root.register_forward_hook(self._end_pass))
            for p in self.points:
                self._handles.append(p.module.register_forward_hook(self._make_hook(p.name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook (called on exit; safe to call twice)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending = None

    # -- results ----------------------------------------------------------------------------
    def clear(self) -> None:
        """Drop the features collected so far."""
        for rows in self._store.values():
            rows.clear()

    @property
    def num_samples(self) -> int:
        """Rows collected per layer (0 before any forward pass)."""
        counts = {sum(t.shape[0] for t in rows) for rows in self._store.values()}
        return max(counts) if counts else 0

    @property
    def features(self) -> OrderedDict[str, Tensor]:
        """Ordered ``name -> (N, D_l)`` features, concatenated over the forward passes.

        Raises:
            RuntimeError: when layers hold different numbers of rows (a tapped module did not
                run in some pass), naming them.
        """
        counts = {name: sum(t.shape[0] for t in rows) for name, rows in self._store.items()}
        if len(set(counts.values())) > 1:
            n = max(counts.values())
            short = {k: v for k, v in counts.items() if v != n}
            raise RuntimeError(
                f"tapped layers have different sample counts (expected {n}): {short}; these "
                "modules did not run in every forward pass"
            )
        out: OrderedDict[str, Tensor] = OrderedDict()
        for p in self.points:
            rows = self._store[p.name]
            if len(rows) > 1:  # keep one tensor so repeated reads do not copy again
                self._store[p.name] = [torch.cat(rows)]
            out[p.name] = self._store[p.name][0] if rows else torch.empty(0, 0)
        return out


class _StopForward(Exception):
    """Raised by a hook to end a forward pass right after the tapped module."""


def _batch_input(batch: Any) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, tuple | list) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise TypeError(
        f"batches must yield tensors or (tensor, ...) tuples, got {type(batch).__name__}"
    )


def iter_layer_features(
    model: nn.Module,
    batches: Iterable[Tensor],
    taps: Taps = "block",
    *,
    layers: Sequence[int | str] | None = None,
    dtype: torch.dtype | None = None,
    to_cpu: bool = False,
    eval_mode: bool = True,
) -> Iterator[tuple[TapPoint, Tensor]]:
    """Yield ``(tap point, features (N, D))`` one layer at a time, in tap order.

    For each tap the batches are run through the model under ``torch.no_grad()`` and the pass
    is stopped right after the tapped module (its hook raises a private exception), so only one
    layer's features are in memory (``N × D_l × itemsize``) and the deeper part of the network
    is never run: about L/2 full forward passes for L taps. The result for each layer equals
    :class:`LayerTaps`'s (first output of a module that runs several times per pass).

    Args:
        model: any torch model; DDP/DataParallel/``torch.compile``/Lightning wrappers are looked
            through and the bare eager module (with its :class:`Normalized`, if any) is run.
        batches: a re-iterable collection of input tensors (B, C, H, W), or of ``(x, ...)``
            tuples (e.g. a DataLoader); a one-shot iterator is materialised in a list first.
            Every layer iterates it again, so it must give the same samples in the same order
            each time (a shuffling DataLoader is refused). Batches are moved to the model's
            device.
        taps: see :func:`resolve_taps`.
        layers: optional subset (1-based indices or names).
        dtype: cast the features to this dtype (e.g. ``torch.float16``).
        to_cpu: move each batch's features to CPU as soon as they are produced.
        eval_mode: run the model in eval mode (restored afterwards); False keeps its mode.

    Raises:
        RuntimeError: when a tapped module does not run during a forward pass.
        ValueError: for a shuffling DataLoader or no batches.
    """
    points = resolve_taps(model, taps, layers=layers)
    runner = strip_runtime_wrappers(model)
    if isinstance(getattr(batches, "sampler", None), torch.utils.data.RandomSampler):
        raise ValueError(
            "batches is a shuffling DataLoader: every layer re-reads the batches, so the rows "
            "would be in a different order per layer; use shuffle=False (or a list of tensors)"
        )
    if iter(batches) is batches:  # type: ignore[comparison-overlap]
        batches = list(batches)
    device = module_device(runner, None)
    for point in points:
        chunks: list[Tensor] = []

        def hook(
            module: nn.Module,
            args: Any,
            output: Any,
            _name: str = point.name,
            _chunks: list[Tensor] = chunks,
        ) -> None:
            _chunks.append(_rows(output, _name, dtype, to_cpu))
            raise _StopForward

        handle = point.module.register_forward_hook(hook)
        try:
            with torch.no_grad(), _eval_mode(runner, eval_mode):
                for batch in batches:
                    x = _batch_input(batch)
                    if device is not None and x.device != device:
                        x = x.to(device)
                    try:
                        runner(x)
                    except _StopForward:
                        continue
                    raise RuntimeError(
                        f"tap {point.name!r} did not run during the forward pass of "
                        f"{type(runner).__name__}"
                    )
        finally:
            handle.remove()
        if not chunks:
            raise ValueError("batches is empty")
        features = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
        del chunks
        yield point, features


def feature_dims(
    model: nn.Module,
    input_shape: Sequence[int],
    taps: Taps = "block",
    *,
    layers: Sequence[int | str] | None = None,
) -> OrderedDict[str, int]:
    """Flattened feature size D_l of every tapped layer for one input of ``input_shape``.

    Runs one zero sample (1, *input_shape) in eval mode (restored afterwards). Memory of
    :class:`LayerTaps` for N samples: ``N * sum(dims.values()) * itemsize`` bytes; of
    :func:`iter_layer_features`: ``N * max(dims.values()) * itemsize``.

    Args:
        model: any torch model.
        input_shape: one sample's shape without the batch dimension, e.g. ``(3, 32, 32)``.
        taps: see :func:`resolve_taps`.
        layers: optional subset.
    """
    runner = strip_runtime_wrappers(model)
    device = module_device(runner, None)
    x = torch.zeros((1, *input_shape), device=device)
    with torch.no_grad(), _eval_mode(runner), LayerTaps(model, taps, layers=layers) as lt:
        runner(x)
    return OrderedDict((name, int(f.shape[1])) for name, f in lt.features.items())
