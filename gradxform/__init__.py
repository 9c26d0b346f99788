"""gradxform: torch.optim's algorithms as pure, jit-compiled JAX transformations."""

from gradxform import checkpoint, schedules
from gradxform.accumulation import AccumulateState, accumulate
from gradxform.averaging import AverageState, average_init, ema_update, swa_update
from gradxform.base import (
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    Schedule,
    Updates,
    apply_updates,
    chain,
    identity,
)
from gradxform.groups import ParamGroupsState, param_groups
from gradxform.hyperparams import (
    InjectHyperparamsState,
    get_hyperparams,
    inject_hyperparams,
    set_hyperparams,
)
from gradxform.layout import FlattenState, flatten
from gradxform.loss_scaling import LossScaledState, get_loss_scale, loss_scaled
from gradxform.optimizers.lbfgs import (
    LbfgsState,
    MinimizeProgress,
    MinimizeResult,
    MultistartResult,
    ScaleByLbfgsState,
    lbfgs,
    minimize,
    minimize_multistart,
)
from gradxform.matrices import as_matrices
from gradxform.optimizers.adadelta import ScaleByAdadeltaState, adadelta, scale_by_adadelta
from gradxform.optimizers.adafactor import ScaleByAdafactorState, adafactor, scale_by_adafactor
from gradxform.optimizers.adagrad import ScaleByAdagradState, adagrad, scale_by_adagrad
from gradxform.optimizers.adam import ScaleByAdamState, adam, adamw, scale_by_adam
from gradxform.optimizers.adamax import ScaleByAdamaxState, adamax, scale_by_adamax
from gradxform.optimizers.asgd import ScaleByAsgdState, asgd, scale_by_asgd
from gradxform.optimizers.muon import ScaleByMuonState, muon, orthogonalize_via_newton_schulz, scale_by_muon
from gradxform.optimizers.nadam import ScaleByNadamState, nadam, scale_by_nadam
from gradxform.optimizers.radam import ScaleByRadamState, radam, scale_by_radam
from gradxform.optimizers.rmsprop import ScaleByRmspropState, rmsprop, scale_by_rmsprop
from gradxform.optimizers.rprop import ScaleByRpropState, rprop, scale_by_rprop
from gradxform.optimizers.sparse_adam import ScaleBySparseAdamState, scale_by_sparse_adam, sparse_adam
from gradxform.optimizers.sgd import ScaleBySgdState, scale_by_sgd, sgd
from gradxform.plateau import ReduceOnPlateauState, reduce_on_plateau
from gradxform.robust import SkipNonFiniteState, all_finite, skip_non_finite
from gradxform.sharding import shard_state
from gradxform.transforms import (
    add_decayed_weights,
    clip_by_global_norm,
    clip_by_value,
    global_norm,
    negate,
    scale,
    scale_by_learning_rate,
)

__version__ = "0.1.0"

__all__ = [
    "AccumulateState",
    "AverageState",
    "EmptyState",
    "FlattenState",
    "GradientTransformation",
    "InjectHyperparamsState",
    "LbfgsState",
    "LossScaledState",
    "MinimizeProgress",
    "MinimizeResult",
    "MultistartResult",
    "OptState",
    "ParamGroupsState",
    "Params",
    "ReduceOnPlateauState",
    "ScaleByAdadeltaState",
    "ScaleByAdafactorState",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByAsgdState",
    "ScaleByLbfgsState",
    "ScaleByMuonState",
    "ScaleByNadamState",
    "ScaleByRadamState",
    "ScaleByRmspropState",
    "ScaleByRpropState",
    "ScaleBySgdState",
    "ScaleBySparseAdamState",
    "Schedule",
    "SkipNonFiniteState",
    "Updates",
    "accumulate",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "add_decayed_weights",
    "all_finite",
    "apply_updates",
    "as_matrices",
    "asgd",
    "average_init",
    "chain",
    "checkpoint",
    "clip_by_global_norm",
    "clip_by_value",
    "ema_update",
    "flatten",
    "get_hyperparams",
    "get_loss_scale",
    "global_norm",
    "identity",
    "inject_hyperparams",
    "lbfgs",
    "loss_scaled",
    "minimize",
    "minimize_multistart",
    "muon",
    "nadam",
    "negate",
    "orthogonalize_via_newton_schulz",
    "param_groups",
    "radam",
    "reduce_on_plateau",
    "rmsprop",
    "rprop",
    "scale",
    "scale_by_adadelta",
    "scale_by_adafactor",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_asgd",
    "scale_by_learning_rate",
    "scale_by_muon",
    "scale_by_nadam",
    "scale_by_radam",
    "scale_by_rmsprop",
    "scale_by_rprop",
    "scale_by_sgd",
    "scale_by_sparse_adam",
    "schedules",
    "set_hyperparams",
    "sgd",
    "shard_state",
    "skip_non_finite",
    "sparse_adam",
    "swa_update",
]
