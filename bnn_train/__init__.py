"""Training stage of bnn: untied activations, binary layers, models, datasets and the training loop.

May import torch, torchvision and numpy (scikit-learn for the bundled Digits, matplotlib for
plots, both lazily); never bnn_export or the CLI. Importing the package itself is cheap: the
modules (``activations``, ``layers``, ``models``, ``data``, ``train``, ``rundir``) load torch.
"""
