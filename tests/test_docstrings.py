"""Every public method of `tfk.Model`, every public callback and the public
functions of `tfk.distribute` and `tfk.datasets` document every parameter.

The docstrings follow the Google style of the Keras 3 API docs: an "Args:"
section with one `name: description` entry per parameter (`*args` and
`**kwargs` as `*args:` / `**kwargs:`). Signatures carry type hints, and the
package ships `py.typed`.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import tfk_trainer as tfk
from tfk_trainer import callbacks

ENTRY = re.compile(r"^\s*(\*{0,2}\w+)(?: \([^)]*\))?:\s", re.M)
# The methods the Keras 3 API docs give, with their exact signatures (names and defaults).
KERAS_SIGNATURES = {
    "compile": "(self, optimizer='rmsprop', loss=None, loss_weights=None, metrics=None, weighted_metrics=None, run_eagerly=False, steps_per_execution=1, jit_compile='auto', auto_scale_loss=True)",
    "fit": "(self, x=None, y=None, batch_size=None, epochs=1, verbose='auto', callbacks=None, validation_split=0.0, validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1)",
    "evaluate": "(self, x=None, y=None, batch_size=None, verbose='auto', sample_weight=None, steps=None, callbacks=None, return_dict=False, **kwargs)",
    "predict": "(self, x, batch_size=None, verbose='auto', steps=None, callbacks=None)",
    "train_on_batch": "(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False)",
    "test_on_batch": "(self, x, y=None, sample_weight=None, return_dict=False)",
    "predict_on_batch": "(self, x)",
}
CALLBACKS = [
    getattr(callbacks, name)
    for name in callbacks.__all__
    if inspect.isclass(getattr(callbacks, name))
    and issubclass(getattr(callbacks, name), callbacks.Callback)
]


def _args_section(doc: str) -> set[str]:
    """The names documented under "Args:" (until the next section or the end)."""
    match = re.search(r"^(\s*)Args:\s*\n(.*?)(?=^\1\S[^\n]*:\s*$|\Z)", doc, re.M | re.S)
    if not match:
        return set()
    body = match.group(2)
    indent = min(
        len(m.group(0)) - len(m.group(0).lstrip()) for m in re.finditer(r"^\s*\S", body, re.M)
    )
    names = set()
    for line in body.splitlines():
        if line.strip() and len(line) - len(line.lstrip()) == indent:
            entry = ENTRY.match(line)
            if entry:
                names.add(entry.group(1))
    return names


def _parameters(fn) -> list[str]:
    names = []
    for p in inspect.signature(fn).parameters.values():
        if p.name == "self":
            continue
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        names.append(prefix + p.name)
    return names


def _public_methods(cls) -> list[tuple[str, object]]:
    found = []
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") or not inspect.isfunction(member):
            continue
        if not member.__module__.startswith("tfk_trainer"):
            continue  # inherited from tf.Module
        found.append((name, member))
    return found


def _check(fn, what: str) -> None:
    doc = inspect.getdoc(fn)
    assert doc and doc.strip(), f"{what} has no docstring"
    params = _parameters(fn)
    if params:
        documented = _args_section(doc)
        missing = [p for p in params if p not in documented]
        assert not missing, f"{what}: parameters not under Args: {missing}"
    unhinted = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.name != "self" and p.annotation is inspect.Parameter.empty
    ]
    assert not unhinted, f"{what}: parameters without type hints: {unhinted}"


MODEL_METHODS = _public_methods(tfk.Model)


def test_the_listed_methods_are_covered():
    names = {n for n, _ in MODEL_METHODS}
    expected = {
        "compile", "fit", "evaluate", "predict", "train_on_batch", "test_on_batch",
        "predict_on_batch", "train_step", "test_step", "predict_step", "compute_loss",
        "compute_metrics", "save_checkpoint", "load_checkpoint", "reset_metrics",
        "get_weights", "set_weights",
    }  # fmt: skip
    assert expected <= names, expected - names
    assert len(CALLBACKS) >= 11, CALLBACKS


@pytest.mark.parametrize("name,method", MODEL_METHODS, ids=[n for n, _ in MODEL_METHODS])
def test_model_method_documents_every_parameter(name, method):
    _check(method, f"tfk.Model.{name}")


def test_model_properties_have_docstrings():
    for name, member in inspect.getmembers(tfk.Model):
        if isinstance(member, property) and not name.startswith("_"):
            if member.fget.__module__.startswith("tfk_trainer"):
                assert inspect.getdoc(member), f"tfk.Model.{name} has no docstring"


def test_model_class_documents_its_constructor():
    documented = _args_section(inspect.getdoc(tfk.Model))
    params = _parameters(tfk.Model.__init__)
    assert [p for p in params if p not in documented] == []


@pytest.mark.parametrize("name", sorted(KERAS_SIGNATURES))
def test_signatures_match_the_keras_api_docs(name):
    signature = inspect.signature(getattr(tfk.Model, name))
    plain = signature.replace(
        parameters=[
            p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()
        ],
        return_annotation=inspect.Signature.empty,
    )
    assert str(plain) == KERAS_SIGNATURES[name]


@pytest.mark.parametrize("cls", CALLBACKS, ids=[c.__name__ for c in CALLBACKS])
def test_callback_documents_its_constructor(cls):
    doc = "\n".join(filter(None, [inspect.getdoc(cls), inspect.getdoc(cls.__init__)]))
    assert doc.strip(), f"{cls.__name__} has no docstring"
    params = _parameters(cls.__init__)
    missing = [p for p in params if p not in _args_section(inspect.getdoc(cls) or "")
               and p not in _args_section(inspect.getdoc(cls.__init__) or "")]  # fmt: skip
    assert not missing, f"{cls.__name__}: constructor parameters not under Args: {missing}"


@pytest.mark.parametrize(
    "fn",
    [
        tfk.distribute.resolve,
        tfk.distribute.tpu_attached,
        tfk.distribute.check_reachable,
        tfk.distribute.is_chief,
        tfk.distribute.is_multi_worker,
        tfk.distribute.is_tpu,
        tfk.distribute.num_replicas,
        tfk.distribute.is_multi_replica,
        tfk.distribute.replica_devices,
        tfk.distribute.cpu_replicas,
        tfk.datasets.load_fashion_mnist,
    ],
    ids=lambda f: f.__name__,
)
def test_public_functions_document_every_parameter(fn):
    _check(fn, f"{fn.__module__}.{fn.__name__}")


def test_args_parser_sees_a_missing_parameter():
    """The parser itself: an undocumented parameter is reported."""

    def documented(a: int, b: int) -> None:
        """Does nothing.

        Args:
            a: the first.
        """

    with pytest.raises(AssertionError, match=r"\['b'\]"):
        _check(documented, "documented")


def test_the_package_ships_py_typed():
    package = Path(tfk.__file__).parent
    assert (package / "py.typed").is_file()
    pyproject = (package.parent / "pyproject.toml").read_text()
    assert re.search(
        r'\[tool\.setuptools\.package-data\]\s*\ntfk_trainer = \[[^\]]*"py\.typed"',
        pyproject.replace("# PEP 561: the package ships its type hints.\n", ""),
    )
