"""``torch_compat.optim``: the 15 torch.optim optimizers and their base class, on JAX arrays.

One small module per torch class; each is made from its spec in :mod:`gradxform.registry`
(see ``torch_compat/optim/_from_spec.py``).
"""

from torch_compat.optim.adadelta import Adadelta
from torch_compat.optim.adafactor import Adafactor
from torch_compat.optim.adagrad import Adagrad
from torch_compat.optim.adam import Adam
from torch_compat.optim.adamax import Adamax
from torch_compat.optim.adamw import AdamW
from torch_compat.optim.asgd import ASGD
from torch_compat.optim.lbfgs import LBFGS
from torch_compat.optim.muon import Muon
from torch_compat.optim.nadam import NAdam
from torch_compat.optim._stateless import swap_in_optimizer_params_and_state
from torch_compat.optim.optimizer import (
    GradxformOptimizer,
    Optimizer,
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch_compat.optim.radam import RAdam
from torch_compat.optim.rmsprop import RMSprop
from torch_compat.optim.rprop import Rprop
from torch_compat.optim.sgd import SGD
from torch_compat.optim.sparse_adam import SparseAdam
from torch_compat.optim import lr_scheduler  # noqa: E402  (needs Optimizer and SGD)
from torch_compat.optim import swa_utils  # noqa: E402  (needs lr_scheduler)

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
    "swa_utils",
    "swap_in_optimizer_params_and_state",
]
