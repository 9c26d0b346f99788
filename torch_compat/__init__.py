"""torch_compat: the stateful ``torch.optim`` API rebuilt on gradxform's functional core.

Example:
  >>> import jax.numpy as jnp
  >>> import torch_compat
  >>> from torch_compat import optim
  >>> model = torch_compat.as_parameters({"w": jnp.array([1.0, -2.0])})
  >>> opt = optim.SGD(torch_compat.parameters(model), lr=0.1, momentum=0.9)
  >>> opt.zero_grad()
  >>> loss = torch_compat.backward(lambda p: jnp.sum(p["w"] ** 2), model)
  >>> opt.step()
  >>> model["w"].data.tolist()
  [0.8, -1.6]
"""

from torch_compat._parameter import Parameter
from torch_compat._tree import as_parameters, backward, named_parameters, parameters, values
from torch_compat import optim  # noqa: E402  (imports Parameter)
from torch_compat import nn  # noqa: E402
from torch_compat import amp  # noqa: E402  (needs optim)

__all__ = ["Parameter", "amp", "as_parameters", "backward", "named_parameters", "nn", "optim", "parameters", "values"]
