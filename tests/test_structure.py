"""The structure of the two packages: the registry is the one source of each optimizer's
facts, torch_compat reaches gradxform only through its public API and ``_internal``, and
no module is hidden by a function of the same name.

The registry's agreement with torch itself (signatures, ``defaults``) is checked live
where torch is importable; the rest stands on its own.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
import pkgutil

import jax.numpy as jnp
import pytest

import gradxform
import torch_compat
from gradxform.registry import FIRST_ORDER, SPECS
from torch_compat import optim

try:
    import torch
except ImportError:  # the live checks are skipped
    torch = None

ROOT = pathlib.Path(__file__).resolve().parent.parent
ALIASES = list(SPECS)


# ------------------------------------------------------------------------ the boundary


def _gradxform_uses(path: pathlib.Path):
    """``(line, what)`` for every import of gradxform and every ``gradxform.<name>`` in a file."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("gradxform."):
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gradxform":
            if node.module == "gradxform":
                for alias in node.names:
                    yield node.lineno, f"gradxform.{alias.name}"
            else:
                yield node.lineno, f"from {node.module} import ..."
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "gradxform":
            yield node.lineno, f"gradxform.{node.attr}"
        elif isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name)):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                yield node.lineno, f"import_module({node.args[0].value!r})"


def _allowed(what: str) -> bool:
    if what in ("import gradxform._internal", "from gradxform._internal import ...", "gradxform._internal"):
        return True
    if what.startswith("gradxform.") and what.count(".") == 1:
        return what.split(".")[1] in gradxform.__all__
    return False


def test_torch_compat_takes_non_public_help_only_from_internal():
    """Every gradxform name torch_compat uses is public (in ``gradxform.__all__``) or comes
    through ``gradxform._internal``: no private module, no ``importlib`` detour."""
    files = sorted((ROOT / "torch_compat").rglob("*.py"))
    assert len(files) > 10
    offending = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in files
        for line, what in _gradxform_uses(path)
        if not _allowed(what)
    ]
    assert not offending, "\n".join(offending)


def test_the_scan_sees_what_it_must_refuse(tmp_path):
    """The scan above catches each way of reaching into gradxform (a check of the check)."""
    source = tmp_path / "probe.py"
    source.write_text(
        "import importlib\nimport gradxform\nfrom gradxform import _numerics, adam\n"
        "from gradxform.robust import _decide_skip\nimport gradxform.transforms\n"
        "x = gradxform.optimizers.muon\ny = importlib.import_module('gradxform.lbfgs')\nz = gradxform.adam\n"
    )
    refused = [what for _, what in _gradxform_uses(source) if not _allowed(what)]
    assert sorted(refused) == sorted([
        "gradxform._numerics",
        "from gradxform.robust import ...",
        "import gradxform.transforms",
        "gradxform.optimizers",
        "import_module('gradxform.lbfgs')",
    ])


@pytest.mark.parametrize("package", [gradxform, torch_compat])
def test_no_module_is_hidden_by_a_function_of_the_same_name(package):
    """``package.sub`` is the module ``package/sub.py`` wherever both exist (``gradxform.lbfgs``
    once was a function hiding ``gradxform/lbfgs.py``)."""
    hidden = []
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        module = importlib.import_module(info.name)
        parent_name, _, child = info.name.rpartition(".")
        parent = importlib.import_module(parent_name)
        if hasattr(parent, child) and getattr(parent, child) is not module:
            hidden.append(info.name)
    assert not hidden


# ------------------------------------------------------------------- the registry


def test_registry_covers_every_optimizer_of_both_faces():
    assert [SPECS[a].torch_name for a in ALIASES] == [
        "SGD", "ASGD", "Rprop", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "SparseAdam", "NAdam",
        "RAdam", "Adafactor", "Muon", "LBFGS",
    ]  # fmt: skip
    for alias, spec in SPECS.items():
        assert alias in gradxform.__all__
        assert spec.torch_name in optim.__all__
    assert FIRST_ORDER == tuple(a for a in ALIASES if a != "lbfgs")


@pytest.mark.parametrize("alias", ALIASES)
def test_core_signature_is_the_specs(alias):
    """The core alias takes the spec's options (implementation flags aside), in torch's
    order, with torch's defaults (``lr`` spelled ``learning_rate``)."""
    spec = SPECS[alias]
    parameters = inspect.signature(getattr(gradxform, alias)).parameters
    core = [p for p in parameters.values() if p.name != "state_dtype"]
    assert [p.name for p in core] == [o.core_name for o in spec.core_options]
    for p in core:
        assert p.default == spec.option(
            "lr" if p.name == "learning_rate" else p.name
        ).default, f"{alias}({p.name}=...)"


@pytest.mark.parametrize("alias", ALIASES)
def test_compat_signature_and_defaults_are_the_specs(alias):
    spec = SPECS[alias]
    cls = getattr(optim, spec.torch_name)
    parameters = list(inspect.signature(cls).parameters.values())
    assert parameters[0].name == "params"
    assert [(p.name, p.default, p.kind == p.KEYWORD_ONLY) for p in parameters[1:]] == [
        (o.name, o.default, o.keyword_only) for o in spec.options
    ]
    params = [torch_compat.Parameter(jnp.ones((2, 2)))]
    opt = cls(params)
    expected = dict(spec.defaults)
    if alias == "lbfgs":
        expected["max_eval"] = 25  # torch's max_iter * 5 // 4
    assert list(opt.defaults) == list(expected) and opt.defaults == expected


@pytest.mark.skipif(torch is None, reason="compared with torch")
@pytest.mark.parametrize("alias", ALIASES)
def test_specs_are_torchs(alias):
    """The spec's signature (names, kinds, defaults) and ``defaults`` order are torch 2.13's."""
    spec = SPECS[alias]
    cls = getattr(torch.optim, spec.torch_name)
    theirs = list(inspect.signature(cls).parameters.values())[1:]
    ours = list(inspect.signature(getattr(optim, spec.torch_name)).parameters.values())[1:]
    assert [(p.name, p.kind) for p in ours] == [(p.name, p.kind) for p in theirs]
    for a, b in zip(ours, theirs):
        assert a.default == b.default and type(a.default) is type(b.default), (a, b)
    opt = cls([torch.nn.Parameter(torch.ones(2, 2))])
    assert list(spec.defaults) == list(opt.defaults)


@pytest.mark.parametrize("alias", [a for a in ALIASES if SPECS[a].state_class])
def test_state_keys_are_fields_of_the_state_class(alias):
    spec = SPECS[alias]
    fields = getattr(gradxform, spec.state_class)._fields
    assert set(spec.state_keys) <= set(fields), (spec.state_keys, fields)


def _nonzero(name):
    return {"betas": (0.9, 0.99), "etas": (0.5, 1.2), "step_sizes": (1e-6, 1.0), "eps": 1e-8,
            "ns_coefficients": (3.4, -4.7, 2.0)}.get(name, 0.05)  # fmt: skip


@pytest.mark.parametrize("alias", FIRST_ORDER)
def test_core_state_holds_the_specs_hyperparams(alias):
    """The core keeps exactly the spec's float hyperparameters in its state, and leaves
    out those that a concrete 0 switches off."""
    spec = SPECS[alias]
    params = jnp.ones((2, 2))
    on = {spec.option(n).core_name: _nonzero(n) for n in spec.off_at_zero}
    if alias == "adafactor":
        on = {"eps": (None, 1e-3)}
    state = getattr(gradxform, alias)(**on).init(params)
    assert set(gradxform.get_hyperparams(state)) == {spec.option(n).core_name for n in spec.hyperparams}
    off = {name: 0.0 for name in on if alias != "adafactor"}
    state = getattr(gradxform, alias)(**off).init(params)
    dropped = set(spec.off_at_zero) | ({"dampening"} if alias == "sgd" else set())  # part of SGD's momentum
    assert set(gradxform.get_hyperparams(state)) == {
        spec.option(n).core_name for n in spec.hyperparams if n not in dropped
    }
