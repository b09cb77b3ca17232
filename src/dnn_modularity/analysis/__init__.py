"""The analyses of both papers, one module each, every one a plain function plus ``run(cfg)``.

- :mod:`~dnn_modularity.analysis.curve`: modularity curves with repeats and null baselines
  (paper 1 Figs. 4, 5, 7, B11-B13);
- :mod:`~dnn_modularity.analysis.adversarial`: curves of adversarial samples (paper 1 Fig. 6a);
- :mod:`~dnn_modularity.analysis.dynamics`: curves during training (paper 1 Fig. 6b);
- :mod:`~dnn_modularity.analysis.difference`: |ΔM| vs linear CKA (paper 1 Fig. 8);
- :mod:`~dnn_modularity.analysis.histograms`: all-pairs similarity histograms (paper 2 Figs. 2-5);
- :mod:`~dnn_modularity.analysis.ring`: ring graphs and M vs Newman Q (paper 2 Figs. 6-10);
- :mod:`~dnn_modularity.analysis.diagnostics`: which classes separate where (per-class purity,
  class-pair entanglement, k-NN and linear-probe accuracy per layer; beyond the papers).

:mod:`~dnn_modularity.analysis.settings` holds the settings every analysis shares
(:class:`~dnn_modularity.analysis.settings.AnalysisSettings`),
:mod:`~dnn_modularity.analysis.measure` what every analysis measures and writes (per-layer
features, k-NN modularity, statistics, the record files), and
:mod:`~dnn_modularity.analysis.context` turns a composed config into model, data, settings, run
folder and loggers.
The entry point is ``python -m dnn_modularity.analyze``.
"""
