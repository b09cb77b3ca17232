"""Every figure the package draws (matplotlib; returned, saved by the caller as PNG + PDF).

- `curves`: per-layer curves with mean ± std bands (`draw_curve`, the one band drawer),
  `plot_curves`, `plot_curve_series`, heatmaps, the layer axis (`layer_ticks`);
- `analysis`: the analyses' figures (adversarial, dynamics, |ΔM| vs CKA, histograms, M vs Q);
- `ring`: ring graphs and their GIF (paper 2, Fig. 6);
- `report`: a sweep's comparison panels;
- `pruning`: ΔM vs ΔAcc (paper 1, Fig. 10(b)).
"""

import matplotlib

# Headless by default (runs on compute nodes); an interactive backend chosen before wins.
matplotlib.use("Agg", force=False)
