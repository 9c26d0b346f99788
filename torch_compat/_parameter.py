"""``Parameter``: a mutable holder of a JAX array and its gradient, as a torch leaf tensor."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

# torch's names for dtypes in its gradient-assignment errors: the C++ name of the
# gradient's type, and the ScalarType name of the tensor's.
_CPP_NAMES = {
    "float16": "c10::Half",
    "bfloat16": "c10::BFloat16",
    "float32": "float",
    "float64": "double",
    "complex64": "c10::complex<float>",
    "complex128": "c10::complex<double>",
    "int8": "signed char",
    "uint8": "unsigned char",
    "int16": "short int",
    "int32": "int",
    "int64": "long int",
    "bool": "bool",
}
_SCALAR_TYPE_NAMES = {
    "float16": "Half",
    "bfloat16": "BFloat16",
    "float32": "Float",
    "float64": "Double",
    "complex64": "ComplexFloat",
    "complex128": "ComplexDouble",
    "int8": "Char",
    "uint8": "Byte",
    "int16": "Short",
    "int32": "Int",
    "int64": "Long",
    "bool": "Bool",
}


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def typename(obj) -> str:
    """A type's name as torch.typename prints it."""
    if isinstance(obj, Parameter):
        return "torch_compat.Parameter"
    module = type(obj).__module__
    name = type(obj).__qualname__
    return name if module == "builtins" else f"{module}.{name}"


class Parameter:
    """A mutable parameter: a JAX array in ``.data`` and an optional gradient in ``.grad``.

    It plays the role of a torch leaf tensor with ``requires_grad=True`` for the
    optimizers of :mod:`torch_compat.optim`. Identity matters (optimizer state is keyed
    by the object), so each Parameter hashes by identity, as torch tensors do.

    An optimizer's ``step()`` updates ``.data`` in place, as torch does: the old array is
    donated to the compiled step and deleted. Read ``.data`` again after a step rather
    than keeping the array from before it. The array given to the constructor (or
    assigned to ``.data``) is copied, so the caller's own arrays are never donated.

    Args:
      data: the initial value (anything ``jnp.asarray`` takes).
      requires_grad: kept for torch compatibility.

    Example:
      >>> import jax.numpy as jnp
      >>> from torch_compat import Parameter
      >>> p = Parameter(jnp.zeros(3, jnp.float32))
      >>> p.grad = jnp.ones(3, jnp.float32)
      >>> p.shape, p.dtype, p.grad.tolist()
      ((3,), dtype('float32'), [1.0, 1.0, 1.0])
    """

    __slots__ = ("_data", "_grad", "requires_grad", "__weakref__")

    def __init__(self, data, requires_grad: bool = True):
        self._data = jnp.array(data, copy=True)
        self._grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def data(self) -> jax.Array:
        """The current value. Assigning replaces it (any shape, as in torch)."""
        return self._data

    @data.setter
    def data(self, value) -> None:
        self._data = jnp.array(value, copy=True)

    @property
    def grad(self):
        """``None`` or an array of the parameter's shape and dtype (or a sparse BCOO array)."""
        return self._grad

    @grad.setter
    def grad(self, value) -> None:
        if value is None:
            self._grad = None
            return
        if isinstance(value, Parameter):
            value = value.data
        if not isinstance(value, (jax.Array, np.ndarray, sparse.BCOO)):
            raise TypeError(
                f"assigned grad expected to be a Tensor or None but got grad of type {typename(value)}"
            )
        if tuple(value.shape) != self.shape:
            raise RuntimeError(
                f"attempting to assign a gradient of size '{_shape_text(value.shape)}' to a "
                f"tensor of size '{_shape_text(self.shape)}'. Please ensure that the gradient "
                "and the tensor are the same size"
            )
        if jnp.dtype(value.dtype) != self.dtype:
            given, own = jnp.dtype(value.dtype).name, self.dtype.name
            raise RuntimeError(
                f"attempting to assign a gradient with dtype '{_CPP_NAMES.get(given, given)}' to a "
                f"tensor with grad_dtype '{_SCALAR_TYPE_NAMES.get(own, own)}'. The gradient must "
                "match the tensor's grad_dtype (defaults to the tensor's dtype). You can set the "
                "tensor's grad_dtype attribute with a specific dtype, or None to allow any dtype. "
                "Set grad_dtype with caution. Diverging the dtypes of a tensor and its gradient "
                "may break downstream systems that assume they match."
            )
        self._grad = value if isinstance(value, sparse.BCOO) else jnp.asarray(value)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def dtype(self) -> jnp.dtype:
        return jnp.dtype(self._data.dtype)

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def dim(self) -> int:
        return self._data.ndim

    def numel(self) -> int:
        return int(self._data.size)

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def is_complex(self) -> bool:
        return bool(jnp.iscomplexobj(self._data))

    def __array__(self, dtype=None, copy=None):
        array = np.asarray(self._data)
        return array if dtype is None else array.astype(dtype)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype.name}, grad={'set' if self._grad is not None else None})"
