"""``torch_compat.amp``: mixed-precision training helpers with torch's API.

:class:`GradScaler` is ``torch.amp.GradScaler`` (dynamic loss scaling) for the
torch_compat optimizers; see ``docs/mixed-precision.md``. (There is no ``autocast``:
in JAX the forward pass casts its parameters itself.)
"""

from torch_compat.amp.grad_scaler import GradScaler, OptState

__all__ = ["GradScaler", "OptState"]
