"""The one door from ``torch_compat`` into gradxform's non-public parts.

``torch_compat`` is built on gradxform's public API (the names in ``gradxform.__all__``)
and on what this module re-exports, nothing else: ``tests/test_structure.py`` scans its
imports. Everything here may change without notice.
"""

from gradxform import _schedule_math as schedule_math
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

__all__ = [
    "MUON_2D",
    "SPECS",
    "OptimizerSpec",
    "check_average_decay",
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
    "schedule_math",
    "swa_leaf",
]
