"""Adversarial examples for the curves of attacked samples (paper 1, Sec. 4.2, Fig. 6a).

- :mod:`~dnn_modularity.attacks.generate`: the six attacks (advertorch), their specs and CPU
  caps, and `generate_adversarial` (normalisation inside the model, inputs in [0, 1]);
- :mod:`~dnn_modularity.attacks.compat`: makes advertorch 0.2.3 importable on current torch.
"""

from dnn_modularity.attacks import generate
from dnn_modularity.attacks.generate import *  # noqa: F403 - re-exports generate.__all__

__all__ = list(generate.__all__)
