"""The one door from ``torch_compat`` into gradxform's non-public parts.

``torch_compat`` is built on gradxform's public API (the names in ``gradxform.__all__``)
and on what this module re-exports, nothing else: ``tests/test_structure.py`` scans its
imports. Everything here may change without notice.
"""

from gradxform import _schedule_math as schedule_math
from gradxform import loss_scaling as _loss_scaling
from gradxform.averaging import _check_decay as check_average_decay
from gradxform.averaging import _ema_leaf as ema_leaf
from gradxform.averaging import _swa_leaf as swa_leaf
from gradxform._numerics import full_like_buffer, hyper_dtype, like_param
from gradxform.optimizers import lbfgs as lbfgs_core
from gradxform.registry import MUON_2D, SPECS, OptimizerSpec, is_array
from gradxform.robust import _check_max_consecutive_skips as check_max_consecutive_skips
from gradxform.robust import _decide_skip as decide_skip
from gradxform.transforms import _clip_scale as clip_scale
from gradxform.transforms import _scale_by_coefficient as scale_by_coefficient

# The loss-scale arithmetic torch_compat.amp.GradScaler shares with gradxform.loss_scaled.
check_loss_scale_factors = _loss_scaling._check_factors
scale_outputs = _loss_scaling._scale_outputs
split_loss_scale_factor = _loss_scaling._split_factor
unscale = _loss_scaling._unscale
update_loss_scale = _loss_scaling._update_scale

__all__ = [
    "MUON_2D",
    "SPECS",
    "OptimizerSpec",
    "check_average_decay",
    "check_loss_scale_factors",
    "check_max_consecutive_skips",
    "clip_scale",
    "decide_skip",
    "ema_leaf",
    "full_like_buffer",
    "hyper_dtype",
    "is_array",
    "lbfgs_core",
    "like_param",
    "scale_by_coefficient",
    "scale_outputs",
    "split_loss_scale_factor",
    "schedule_math",
    "swa_leaf",
    "unscale",
    "update_loss_scale",
]
