"""Training stage of bnn: untied activations, binary layers, models, datasets and the training loop.

May import torch, torchvision, numpy and bnn_runtime (imports run cli -> train/export ->
runtime; scikit-learn for the bundled Digits and matplotlib for plots, both lazily); never
bnn_export or the CLI. Importing the package itself is cheap: the
modules (``activations``, ``layers``, ``models``, ``data``, ``train``, ``rundir``) load torch.
"""
