"""The training monitor's figures: curves and epoch × layer heatmaps of its rows, and W&B media.

:class:`MonitorFigures` is a part of
:class:`~dnn_modularity.callbacks.modularity.ModularityMonitor` (it reads the monitor's history).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import matplotlib.pyplot as plt
import torch
from torch import Tensor

from dnn_modularity.loggers import log_pngs_and_table
from dnn_modularity.plots.curves import plot_curves, plot_heatmap
from dnn_modularity.records import (
    CSV_COLUMNS,
    atomic_save_figure,
)
from dnn_modularity.reference import matching_authors_curve

__all__ = ["MonitorFigures", "rows_to_matrix"]


def rows_to_matrix(
    rows: Sequence[Mapping[str, Any]], value: str = "modularity"
) -> tuple[list[int], list[str], Tensor]:
    """Arrange monitor rows into an (epochs x layers) matrix, averaging over repeats.

    Args:
        rows: Row dicts with at least `epoch`, `layer_index`, `layer` and `value` (CSV strings ok).
        value: Column to arrange ("modularity" or "M").

    Returns:
        epochs: Sorted epochs (E,).
        layers: Layer names in layer-index order (L,).
        matrix: (E, L) float64, NaN where a value is missing.
    """
    cells: dict[tuple[int, int], list[float]] = {}
    names: dict[int, str] = {}
    for row in rows:
        raw = row.get(value)
        if raw is None or raw == "":
            continue
        epoch, index = int(row["epoch"]), int(row["layer_index"])
        names[index] = str(row["layer"])
        cells.setdefault((epoch, index), []).append(float(raw))
    epochs = sorted({e for e, _ in cells})
    indices = sorted(names)
    matrix = torch.full((len(epochs), len(indices)), float("nan"), dtype=torch.float64)
    for (epoch, index), vals in cells.items():
        matrix[epochs.index(epoch), indices.index(index)] = sum(vals) / len(vals)
    return epochs, [names[i] for i in indices], matrix


class MonitorFigures:
    """Figures of the monitor's history (a part of ``ModularityMonitor``)."""

    def reference_curve(self, num_layers: int) -> tuple[str, list[float]] | None:
        """The authors' published curve for a matching run (ResNet-56 on CIFAR-10/100), or None.

        Drawn dashed in the modularity-curve figure, so a run shows at once whether it
        reproduces paper 1's curve (:mod:`dnn_modularity.reference`).
        """
        ref = matching_authors_curve(self.model_name, self.data_name, num_layers)
        return None if ref is None else (ref.label, list(ref.values))

    def curve_figures(self) -> dict[str, Any]:
        """The curve and heatmap figures of the history: ``{"modularity_curves": Figure, ...}``."""
        out: dict[str, Any] = {}
        values = ["modularity"] + (["M"] if self.compute_M else [])
        for value in values:
            epochs, layers, matrix = rows_to_matrix(self.history, value)
            if not epochs:
                continue
            label = "modularity Q" if value == "modularity" else "class-separation M"
            what = f"N={self.n}, k={self.k}, {self.metric}, taps={self.tap_label}"
            if value == "M":
                what = (
                    f"N={self.n}, |E|={self.num_edges} ({self.edge_density:.2%} of pairs), "
                    f"{self.metric}, taps={self.tap_label}"
                )
            out[f"{value}_curves"] = plot_curves(
                matrix.numpy(),
                labels=[f"epoch {e}" for e in epochs],
                color_values=epochs,
                color_label="epoch",
                title=f"{label} per layer during training ({what})",
                ylabel=label,
                reference=self.reference_curve(len(layers)) if value == "modularity" else None,
            )
            out[f"{value}_heatmap"] = plot_heatmap(
                matrix.numpy(),
                row_labels=epochs,
                col_labels=layers,
                title=f"{label}: epoch x layer ({what})",
                cbar_label=label,
            )
        return out

    def save_figures(self, trainer: L.Trainer | None = None) -> list[Path]:
        """Write curve and heatmap figures (PNG + PDF) of the history to `<output_dir>/figures/`."""
        self._measured_since_figure = 0
        folder = self._out_dir(trainer) / "figures"
        paths: list[Path] = []
        for name, fig in self.curve_figures().items():
            paths += atomic_save_figure(fig, folder / f"{self._figure_tag}{name}")
            plt.close(fig)
        return paths

    def _log_media(self, trainer: L.Trainer, paths: list[Path]) -> None:
        log_pngs_and_table(
            trainer.loggers, self.log_prefix, paths, "modularity/table", self.history, CSV_COLUMNS
        )
