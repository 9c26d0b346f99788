r"""Derivatives of a minimizer with respect to the objective's arguments (implicit function theorem).

At a minimum ``x*(θ)`` of ``f(x, θ)`` the gradient vanishes, ``∇ₓf(x*(θ), θ) = 0``.
Differentiating that identity gives the tangent of the solution without differentiating
the iterations that found it:

.. math::

    H \, \dot x = -\partial_\theta \nabla_x f \, \dot\theta, \qquad H = \nabla_x^2 f(x^*, \theta).

The right-hand side is one ``jax.jvp`` of ``∇ₓf`` along ``θ̇``, and the system is solved by
conjugate gradients on Hessian-vector products (``jax.scipy.sparse.linalg.cg``, which is a
``lax.custom_linear_solve``: symmetric, so reverse mode transposes it into the same solve).
The rule is a ``jax.custom_jvp``, so ``jax.jvp``, ``jax.grad``, ``jax.jacfwd`` and
``jax.jacrev`` all work and none of them traces the solver's loop.

With bounds, a coordinate at a bound whose gradient points out of the box (``x_i`` at
``lower_i`` with ``∂f/∂x_i > 0``, or at ``upper_i`` with ``∂f/∂x_i < 0``) is an active
constraint: small changes of ``θ`` keep it there, so its derivative is 0, and the free
coordinates solve the same system restricted to them (the reduced Hessian). A coordinate
at a bound with a zero gradient (a degenerate constraint) is treated as free.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradxform import _numerics


def _flatten(tree):
    flat, unravel = ravel_pytree(jax.tree.map(_numerics.as_real, tree))
    complex_leaves = jax.tree.map(jnp.iscomplexobj, tree)  # Python bools: no values captured

    def unflatten(v):
        return jax.tree.map(lambda r, c: _numerics.as_complex(r) if c else r, unravel(v), complex_leaves)

    return flat, unflatten


def _flat_bound(bound, solution, flat, fill):
    """A bound (``None``, a scalar, or a pytree like ``solution``) as a flat vector like ``flat``."""
    if bound is None:
        return jnp.full_like(flat, fill)
    if jax.tree.structure(bound) == jax.tree.structure(solution):
        leaves = jax.tree.map(lambda b, x: jnp.broadcast_to(jnp.asarray(b, flat.dtype), jnp.shape(x)), bound, solution)
        return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(leaves)] or [flat[:0]])
    return jnp.broadcast_to(jnp.asarray(bound, flat.dtype), flat.shape)


def split_differentiable(args):
    """``(float leaves of args, rebuild)``: the leaves derivatives are taken in, and
    ``rebuild(leaves) -> args`` that puts them back among the others (integer arrays,
    Python objects: passed to the objective as they are, never differentiated)."""
    leaves, treedef = jax.tree.flatten(args)

    def is_float(leaf):
        if not (hasattr(leaf, "dtype") or isinstance(leaf, (float, complex))):
            return False
        return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)

    floats = [is_float(leaf) for leaf in leaves]

    def rebuild(float_leaves):
        it = iter(float_leaves)
        return jax.tree.unflatten(treedef, [next(it) if f else leaf for leaf, f in zip(leaves, floats)])

    return [leaf for leaf, f in zip(leaves, floats) if f], rebuild


def free_mask(x, grad, lower, upper):
    """``True`` where a coordinate is free: not at a bound with the gradient pushing outward."""
    at_lower_active = (x <= lower) & (grad > 0)
    at_upper_active = (x >= upper) & (grad < 0)
    return ~(at_lower_active | at_upper_active)


def _solve_tolerance(dtype) -> float:
    # The relative residual CG stops at: about 4e-11 in float64, 2e-5 in float32.
    return float(jnp.finfo(dtype).eps) ** (2.0 / 3.0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _implicit_flat(flat_fun, x, lower, upper, args):
    del flat_fun, lower, upper, args
    return x


@_implicit_flat.defjvp
def _implicit_flat_jvp(flat_fun, primals, tangents):
    x, lower, upper, args = primals
    args_dot = tangents[3]  # the tangents of x (a solver's output) and of the bounds are ignored
    grad_x = jax.grad(flat_fun)
    grad = grad_x(x, args)
    free = free_mask(x, grad, lower, upper)
    # -∂θ∇ₓf · θ̇: the gradient's change along θ̇ at fixed x.
    rhs = -jax.jvp(lambda a: grad_x(x, a), (args,), (args_dot,))[1]
    rhs = jnp.where(free, rhs, 0)

    def reduced_hessian(v):
        hv = jax.jvp(lambda y: grad_x(y, args), (x,), (jnp.where(free, v, 0),))[1]
        return jnp.where(free, hv, v)  # the identity on the fixed coordinates

    tol = _solve_tolerance(x.dtype)

    def conjugate_gradients(matvec, b):
        return jax.scipy.sparse.linalg.cg(matvec, b, tol=tol)[0]

    # cg is itself a custom_linear_solve, but one whose transpose fails on tangents it
    # mixes into its starting point; this outer one only ever calls it as a black box.
    x_dot = jax.lax.custom_linear_solve(reduced_hessian, rhs, solve=conjugate_gradients, symmetric=True)
    return x, jnp.where(free, x_dot, 0)


def solution_with_implicit_grad(fun: Callable, solution: Any, args: tuple, bounds=None) -> Any:
    """``solution`` (a minimizer of ``fun(x, *args)``) whose derivatives in ``args`` are implicit.

    The value returned is ``solution`` itself. Its derivatives with respect to ``args``
    (forward or reverse mode) are those of the exact minimizer, by the implicit function
    theorem at ``solution`` (see the module docstring); ``solution`` is treated as a
    constant, so the solver that produced it is never differentiated (give it
    ``jax.lax.stop_gradient`` inputs so that it is not even traced for derivatives).

    Args:
      fun: the objective, ``fun(x, *args) -> scalar``, twice differentiable in ``x``
        (and in ``x`` then ``args``) at ``solution``.
      solution: the minimizer, any pytree of float (or complex) arrays.
      args: the tuple of ``fun``'s other arguments; the derivatives are taken in their
        float (and complex) leaves; other leaves (integers, Python objects) are passed
        as they are.
      bounds: ``None`` or ``(lower, upper)``, each ``None``, a scalar, or a pytree like
        ``solution``. A coordinate at its bound with the gradient pushing outward is held
        fixed (derivative 0); the free ones are solved on the reduced Hessian.

    Returns:
      ``solution``, differentiable with respect to ``args``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from gradxform._implicit import solution_with_implicit_grad
      >>> f = lambda x, a: jnp.sum((x - a) ** 2)  # minimizer x* = a, dx*/da = 1
      >>> float(jax.grad(lambda a: solution_with_implicit_grad(f, jnp.float32(2.0), (a,)))(2.0))
      1.0
    """
    flat, unflatten = _flatten(solution)
    flat = jax.lax.stop_gradient(flat)

    float_args, rebuild = split_differentiable(tuple(args))

    def flat_fun(v, a):
        return fun(unflatten(v), *rebuild(a))

    lower, upper = (None, None) if bounds is None else bounds
    lower = jax.lax.stop_gradient(_flat_bound(lower, solution, flat, -jnp.inf))
    upper = jax.lax.stop_gradient(_flat_bound(upper, solution, flat, jnp.inf))
    out = _implicit_flat(flat_fun, flat, lower, upper, float_args)
    return unflatten(out)
