"""``torch_compat.optim``: the 14 torch.optim optimizers and their base class, on JAX arrays."""

from torch_compat.optim.adam import Adam, AdamW
from torch_compat.optim.adaptive import Adadelta, Adagrad, Adamax, NAdam, RAdam, RMSprop
from torch_compat.optim.asgd import ASGD, Rprop
from torch_compat.optim.lbfgs import LBFGS
from torch_compat.optim.large_scale import Adafactor, Muon, SparseAdam
from torch_compat.optim.optimizer import (
    GradxformOptimizer,
    Optimizer,
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch_compat.optim.sgd import SGD
from torch_compat.optim import lr_scheduler  # noqa: E402  (needs Optimizer and SGD)

__all__ = [
    "LBFGS",
    "ASGD",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "GradxformOptimizer",
    "Muon",
    "NAdam",
    "Optimizer",
    "RAdam",
    "RMSprop",
    "Rprop",
    "SGD",
    "SparseAdam",
    "lr_scheduler",
    "register_optimizer_step_post_hook",
    "register_optimizer_step_pre_hook",
]
