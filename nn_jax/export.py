"""Export a trained model for serving with ``jax.export``: a file that runs without its code.

:func:`export_model` traces ``layer.apply`` in evaluation mode (``train=False``, no rng) with
the params and state baked in as constants (or kept as inputs), for a symbolic batch size
(``jax.export.symbolic_shape("b")``) or the example's, and returns an :class:`ExportedModel`.
:func:`save_exported` writes it as two files:

* ``path``: exactly ``Exported.serialize()`` (StableHLO plus JAX's calling convention, a
  versioned, stable format), so serving code needs only JAX:
  ``jax.export.deserialize(open(path, "rb").read()).call(x)``;
* ``path + ".json"``: a small readable sidecar: the input and output specs (shapes with ``"b"``
  for the batch axis, dtypes), the platforms, the layer's repr, the JAX version.

:func:`load_exported` reads them back as an :class:`ExportedModel` whose call checks the input
structure, shapes and dtypes first (an ``ArgumentError`` / ``ShapeError`` that says what was
expected, instead of a raw XLA error). No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nn_jax.core import Layer, Params, State, check_layer
from nn_jax.errors import ArgumentError, ConfigError, FileFormatError, ShapeError

__all__ = ["ExportedModel", "export_model", "load_exported", "save_exported"]

_FORMAT = "nn_jax.export/1"


def _dim(d: Any) -> int | str:
    return d if isinstance(d, int) else str(d)


def _spec(avals: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"shape": [_dim(d) for d in a.shape], "dtype": str(a.dtype)} for a in avals]


def _shown(shape: Sequence[Any]) -> str:
    dims = [str(d) for d in shape]
    return f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"


class ExportedModel:
    """A model exported with ``jax.export``, callable on its inputs.

    ``model(x)`` (``model(params, state, x)`` when exported with ``params_as_inputs=True``)
    checks the inputs against the exported specs, then runs the compiled program; it returns
    the model's output (evaluation mode; the state is not returned).

    Attributes:
        exported: the ``jax.export.Exported``.
        metadata: the JSON-able description written to the sidecar (specs, platforms, layer).
    """

    def __init__(self, exported: jax.export.Exported, metadata: dict[str, Any]) -> None:
        self.exported = exported
        self.metadata = metadata

    def serialize(self) -> bytes:
        """The serialized ``Exported`` (what :func:`save_exported` writes to ``path``)."""
        return bytes(self.exported.serialize())

    def __repr__(self) -> str:
        inputs = ", ".join(f"{a.dtype}{_shown(a.shape)}" for a in self.exported.in_avals)
        return f"ExportedModel({self.exported.fun_name}, inputs [{inputs}])"

    def check_inputs(self, *args: Any) -> None:
        """Raise unless ``args`` match the exported input structure, shapes and dtypes."""
        where = "exported model"
        leaves, treedef = jax.tree.flatten((args, {}))
        if str(treedef) != str(self.exported.in_tree):
            raise ArgumentError(
                f"{where}: expected inputs structured as {self.exported.in_tree}, given "
                f"{treedef}; pass the input x alone (or params, state, x when exported with "
                "params_as_inputs=True)"
            )
        sizes: dict[str, int] = {}
        for i, (leaf, aval) in enumerate(zip(leaves, self.exported.in_avals, strict=True)):
            shape = tuple(np.shape(leaf))
            dtype = np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
            expected = _shown(aval.shape)
            symbols = sorted({str(d) for d in aval.shape if not isinstance(d, int)})
            note = f" ({', '.join(symbols)}: any size >= 1, the batch size)" if symbols else ""
            if dtype != aval.dtype:
                raise ShapeError(
                    f"{where}: input {i} has dtype {dtype}, expected {aval.dtype} (for shape "
                    f"{expected}); cast it, e.g. x.astype(np.{aval.dtype})"
                )
            fits = len(shape) == len(aval.shape)
            for given, want in zip(shape, aval.shape, strict=False):
                if isinstance(want, int):
                    fits = fits and given == want
                else:
                    fits = fits and given >= 1 and sizes.setdefault(str(want), given) == given
            if not fits:
                raise ShapeError(f"{where}: input {i} has shape {shape}, expected {expected}{note}")

    def __call__(self, *args: Any) -> Any:
        self.check_inputs(*args)
        return self.exported.call(*args)


def export_model(
    layer: Layer,
    params: Params,
    state: State,
    example_input: Any,
    *,
    batch_size_symbolic: bool = True,
    params_as_inputs: bool = False,
    platforms: Sequence[str] | None = None,
) -> ExportedModel:
    """Export ``layer.apply(params, state, x, train=False)[0]`` with ``jax.export``.

    Args:
        layer: the model.
        params, state: its trained params and state (``{}`` for a stateless model).
        example_input: an array, ``jax.ShapeDtypeStruct`` or pytree of them with a leading
            batch axis ``(B, ...)``; only shapes and dtypes are read.
        batch_size_symbolic: export for any batch size (``jax.export.symbolic_shape("b")`` as
            the leading axis of every input leaf); ``False`` fixes the example's ``B``.
        params_as_inputs: ``False`` (default) bakes params and state into the program as
            constants, so the exported function takes ``x`` only; ``True`` keeps them as
            inputs, ``f(params, state, x)``, e.g. to swap in new weights without re-exporting.
        platforms: e.g. ``("cpu", "cuda")`` to serve on several; default the current backend.

    Returns:
        An :class:`ExportedModel` (``.serialize()`` gives the bytes; save it with
        :func:`save_exported`).

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax import Dense
    >>> params, state = Dense(2).init(jax.random.key(0), jnp.zeros((1, 3)))
    >>> model = export_model(Dense(2), params, state, jnp.zeros((1, 3)))
    >>> model
    ExportedModel(forward, inputs [float32(b, 3)])
    >>> model(jnp.ones((4, 3))).shape
    (4, 2)
    """
    check_layer("export_model", layer, "layer")
    for what, tree in (("params", params), ("state", state)):
        if not isinstance(tree, dict):
            raise ArgumentError(
                f"export_model: {what} must be the dict that layer.init returned (state {{}} "
                f"for a stateless layer), given {type(tree).__name__}"
            )
    structs = jax.eval_shape(lambda t: t, example_input)
    leaves, treedef = jax.tree.flatten(structs)
    if not leaves or any(len(s.shape) == 0 for s in leaves):
        raise ShapeError(
            "export_model: example_input must be arrays with a leading batch axis, given "
            f"shapes {[tuple(s.shape) for s in leaves]}"
        )
    if batch_size_symbolic:
        (b,) = jax.export.symbolic_shape("b")
        leaves = [jax.ShapeDtypeStruct((b, *s.shape[1:]), s.dtype) for s in leaves]
    x_spec = jax.tree.unflatten(treedef, leaves)

    def forward(*args: Any) -> Any:
        p, s, x = args if params_as_inputs else (params, state, *args)
        return layer.apply(p, s, x, train=False)[0]

    inputs = (params, state, x_spec) if params_as_inputs else (x_spec,)
    fn = jax.jit(forward)
    try:
        exported = jax.export.export(fn, platforms=None if platforms is None else tuple(platforms))(
            *inputs
        )
    except (TypeError, ValueError) as e:
        if not batch_size_symbolic or "symbolic" not in str(e).lower():
            raise
        raise ConfigError(
            f"export_model: {layer!r} could not be traced for a symbolic batch size ({e}); "
            "export for the example's batch size with batch_size_symbolic=False"
        ) from e
    metadata = {
        "format": _FORMAT,
        "layer": repr(layer),
        "params_as_inputs": params_as_inputs,
        "inputs": _spec(exported.in_avals),
        "outputs": _spec(exported.out_avals),
        "platforms": list(exported.platforms),
        "jax_version": jax.__version__,
    }
    return ExportedModel(exported, metadata)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_exported(path: str | os.PathLike[str], model: ExportedModel) -> Path:
    """Write ``model`` to ``path`` (the serialized ``Exported``) and ``path + ".json"``.

    The first file alone is enough to serve with JAX only
    (``jax.export.deserialize(data).call(x)``); the sidecar says what the inputs must be.
    Returns ``path`` as a ``Path``.
    """
    if not isinstance(model, ExportedModel):
        raise ArgumentError(
            f"save_exported: model must be what export_model returns, given {type(model).__name__}"
        )
    path = Path(path)
    _write_atomic(path, model.serialize())
    _write_atomic(_sidecar(path), json.dumps(model.metadata, indent=2).encode())
    return path


def load_exported(path: str | os.PathLike[str]) -> ExportedModel:
    """Read a model written by :func:`save_exported`; no model code is needed to run it.

    The sidecar (``path + ".json"``) is optional: the input checks read the specs stored in
    the ``Exported`` itself. A missing or corrupt file is a ``FileFormatError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"load_exported: no file at {str(path)!r}")
    data = path.read_bytes()
    try:
        exported = jax.export.deserialize(bytearray(data))
    except Exception as e:  # flatbuffers raises assorted errors on garbage
        raise FileFormatError(
            f"load_exported: {str(path)!r} is not a serialized jax.export.Exported "
            f"({type(e).__name__}: {e}); nothing was loaded"
        ) from None
    metadata: dict[str, Any] = {"format": _FORMAT}
    sidecar = _sidecar(path)
    if sidecar.is_file():
        try:
            metadata = json.loads(sidecar.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FileFormatError(
                f"load_exported: sidecar {str(sidecar)!r} is not valid JSON ({e})"
            ) from None
    return ExportedModel(exported, metadata)
