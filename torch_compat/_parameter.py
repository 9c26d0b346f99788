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


# What to do, appended to torch's messages where a torch user's habit fails here.
ARRAYS_HINT = (
    "To optimize JAX or NumPy arrays, or a pytree of them such as a dict, wrap them first: "
    "model = torch_compat.as_parameters(tree), then pass torch_compat.parameters(model)."
)
MATH_HINT = (
    "A Parameter holds an array but is not one: use p.data for its value in JAX code, or "
    "compute gradients with torch_compat.backward(loss_fn, model), which calls loss_fn on arrays."
)
DTYPE_HINT = (
    "Cast the array to a floating dtype first (for example x.astype(jnp.float32)), or set "
    "requires_grad=False for an array that is not trained."
)


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _requires_grad_allowed(dtype) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.inexact))  # floating point or complex, as torch


def _refused_operator(symbol: str, reflected: bool = False, unary: bool = False):
    """A special method that refuses JAX maths on a Parameter with Python's own text
    (``unsupported operand type(s) for +: 'Parameter' and 'int'``) and :data:`MATH_HINT`."""

    def refuse(self, *other):
        if unary:
            text = f"bad operand type for {symbol}: 'Parameter'"
        elif symbol in ("<", "<=", ">", ">="):
            text = f"'{symbol}' not supported between instances of 'Parameter' and '{type(other[0]).__name__}'"
        else:
            left, right = ("Parameter", type(other[0]).__name__)
            if reflected:
                left, right = right, left
            text = f"unsupported operand type(s) for {symbol}: '{left}' and '{right}'"
        raise TypeError(f"{text}. {MATH_HINT}")

    return refuse


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

    A Parameter is not an array: operators on it (``p + 1``, ``x @ p``) raise a
    ``TypeError`` pointing to ``.data`` and :func:`torch_compat.backward`, and ``jnp``
    functions and ``jax.jit`` raise JAX's ``TypeError``, which shows the Parameter's repr
    (ending in ``use .data for the array``). Making it work in maths was considered and
    left out: JAX 0.10's ``__jax_array__`` hook converts it in operators and
    ``jnp.asarray`` but is refused by ``jnp`` functions, ``jit`` and ``grad``, and a value
    read from ``.data`` in an expression carries no gradient (gradients come from
    :func:`torch_compat.backward`, which calls the loss on arrays). ``np.asarray(p)`` and
    ``jnp.asarray(p)`` read the value.

    torch's conveniences for a training loop: :meth:`item`, :meth:`tolist`,
    :meth:`numpy` (torch's refusal while ``requires_grad``), :meth:`detach` (a copy that
    does not require gradients), :meth:`numel`, :meth:`size`, :meth:`dim`, ``ndim``,
    ``shape``, ``dtype``, ``requires_grad``.

    Args:
      data: the initial value (anything ``jnp.asarray`` takes).
      requires_grad: whether it takes gradients (read by :func:`torch_compat.backward`).

    Raises:
      RuntimeError: torch's, for ``requires_grad`` with a dtype that is not floating
        point or complex (also when set later, or when such ``.data`` is assigned).

    Example:
      >>> import jax.numpy as jnp
      >>> from torch_compat import Parameter
      >>> p = Parameter(jnp.zeros(3, jnp.float32))
      >>> p.grad = jnp.ones(3, jnp.float32)
      >>> p.shape, p.dtype, p.grad.tolist()
      ((3,), dtype('float32'), [1.0, 1.0, 1.0])
    """

    __slots__ = ("_data", "_grad", "_requires_grad", "__weakref__")

    def __init__(self, data, requires_grad: bool = True):
        data = jnp.array(data, copy=True)
        if requires_grad and not _requires_grad_allowed(data.dtype):
            raise RuntimeError(f"Only Tensors of floating point and complex dtype can require gradients. {DTYPE_HINT}")
        self._data = data
        self._grad = None
        self._requires_grad = bool(requires_grad)

    @property
    def requires_grad(self) -> bool:
        """Whether the parameter takes gradients (floating point and complex ones only, as in torch)."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and not _requires_grad_allowed(self._data.dtype):
            raise RuntimeError(f"only Tensors of floating point and complex dtype can require gradients. {DTYPE_HINT}")
        self._requires_grad = bool(value)

    @property
    def data(self) -> jax.Array:
        """The current value. Assigning replaces it (any shape, as in torch; a floating
        point or complex dtype while ``requires_grad``)."""
        return self._data

    @data.setter
    def data(self, value) -> None:
        value = jnp.array(value, copy=True)
        if self._requires_grad and not _requires_grad_allowed(value.dtype):
            raise RuntimeError(
                f"data set to a tensor that requires gradients must be floating point or complex dtype. {DTYPE_HINT}"
            )
        self._data = value

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
        # (A JAX array is kept as it is: jnp.asarray would return it, after ~20 us of dispatch.)
        self._grad = value if isinstance(value, (jax.Array, sparse.BCOO)) else jnp.asarray(value)

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

    def item(self):
        """The value of a one-element Parameter as a Python number (torch's ``item()``).

        Raises:
          RuntimeError: torch's, for any other number of elements.
        """
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be converted to Scalar")
        return self._data.reshape(()).item()

    def tolist(self):
        """The value as (nested) Python lists, as torch's ``tolist()``."""
        return self._data.tolist()

    def numpy(self) -> np.ndarray:
        """The value as a NumPy array, for a Parameter that does not require gradients.

        The array is a copy (torch's shares memory; JAX arrays cannot be written in place).

        Raises:
          RuntimeError: torch's, while ``requires_grad`` (use ``p.detach().numpy()``).
        """
        if self._requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        return np.array(self._data)

    def detach(self) -> "Parameter":
        """A new Parameter with the current value that does not require gradients.

        Unlike torch's, it is a copy, not a view: a step replaces (and donates) the
        parameter's array, so a view could not follow it. It holds the value at the time
        of the call.
        """
        return Parameter(self._data, requires_grad=False)

    def __array__(self, dtype=None, copy=None):
        array = np.asarray(self._data)
        return array if dtype is None else array.astype(dtype)

    # A Parameter is no array in maths (JAX's or NumPy's): each operator raises a
    # TypeError that points to .data and torch_compat.backward. (jnp functions, such as
    # jnp.sin(p), raise JAX's own TypeError: "... of type <class 'Parameter'> is not a
    # valid JAX type".) np.asarray(p) still reads the value.
    __array_ufunc__ = None  # NumPy's operators defer to the ones below
    for _name, _symbol in [
        ("add", "+"), ("sub", "-"), ("mul", "*"), ("truediv", "/"), ("floordiv", "//"), ("mod", "%"),
        ("pow", "**"), ("matmul", "@"), ("and", "&"), ("or", "|"), ("xor", "^"), ("lshift", "<<"), ("rshift", ">>"),
    ]:
        locals()[f"__{_name}__"] = _refused_operator(_symbol)
        locals()[f"__r{_name}__"] = _refused_operator(_symbol, reflected=True)
    for _name, _symbol in [("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">=")]:
        locals()[f"__{_name}__"] = _refused_operator(_symbol)
    for _name, _symbol in [("neg", "unary -"), ("pos", "unary +"), ("invert", "unary ~"), ("abs", "abs()")]:
        locals()[f"__{_name}__"] = _refused_operator(_symbol, unary=True)
    del _name, _symbol

    def __repr__(self) -> str:
        # The hint ends the repr because JAX's TypeError for a Parameter given to a jnp
        # function or to jit shows it ("Argument '<repr>' of type ... is not a valid JAX type").
        grad = "set" if self._grad is not None else None
        return f"Parameter(shape={self.shape}, dtype={self.dtype.name}, grad={grad}, use .data for the array)"
