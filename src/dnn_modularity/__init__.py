"""dnn-modularity: how a CNN separates classes, layer by layer.

The per-layer measurement of Lu et al. (2022), "Understanding the Dynamics of DNNs Using Graph
Modularity": the Newman modularity of a k-NN graph of the samples' features with the classes as
communities, and the class-separation analyses of Yang et al., "Understanding the class separation
process of convolutional neural networks".
"""

__version__ = "0.1.0"
