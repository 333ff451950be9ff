"""The fixed option choices of a run, importable without torch (the CLI builds its Enums from them)."""

MODELS = ("suc", "mlp", "lenet5", "arch")  # arch: the network of --arch (bnn_train/arch.py)
DATASETS = ("ones", "digits", "mnist", "fashion-mnist")
WEIGHTS = ("float", "binary")
POOLS = ("auto", "max", "qmean")
INITS = ("default", "xavier", "he", "orthogonal", "diag_noise")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("none", "cosine")
LOSS_REDUCTIONS = ("mean", "sum")
DEVICES = ("auto", "cpu", "cuda")
