"""torch_compat.nn: the parts of ``torch.nn`` that work on parameters' gradients.

Only :mod:`torch_compat.nn.utils` (gradient clipping) is provided; layers and modules
are out of scope (use flax, equinox or plain JAX functions for models).
"""

from torch_compat.nn import utils

__all__ = ["utils"]
