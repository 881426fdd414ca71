"""PyTorch weights in and out: a ``state_dict`` (a safetensors file) <-> nn_jax params and state.

Builds on NumPy and ``safetensors.numpy`` only; torch itself is never imported (save a model in
PyTorch with ``safetensors.torch.save_file(model.state_dict(), path)``).

How names are matched. The nn_jax model's layer tree is walked with the taps of
:mod:`nn_jax.core` (as :func:`nn_jax.inspect.summary` does: ``jax.eval_shape``, nothing runs),
so every layer gets its path (``"encoder/block_0/attention"``). Each path gets a *PyTorch
name*: the path with ``/`` written ``.``, where composite layers rename their children to their
PyTorch twins' attribute names (the transformer blocks: ``attention`` -> ``self_attn``,
``mlp/up`` -> ``linear1``, ``attention_norm`` -> ``norm1``, ...; a :class:`StackedRNN` of
:class:`Bidirectional` RNNs turns into one ``nn.LSTM``'s ``_l{k}`` / ``_reverse`` suffixes).
A PyTorch ``nn.Sequential`` numbers every child, ReLU and pooling included, and so does nn_jax's
:class:`~nn_jax.combinators.Sequential` (slots ``"0"``, ``"1"``, ...; parameter-free slots keep
their number), so a ``Sequential`` written with the same children in the same order matches
``0.weight``, ``1.running_mean``, ... with no rule. The zoo's ``TransformerEncoder`` and
``TransformerLM`` name their blocks as an ``nn.TransformerEncoder`` attribute ``encoder`` would
(``encoder.layers.{i}``, ``encoder.norm``, beside ``embedding`` and ``head``). Other layouts take
``rules``: pairs ``(torch_pattern, nn_jax_pattern)`` of dotted name prefixes with ``{field}``
placeholders (each matches one name part), the right side written as nn_jax derives names (its
paths with ``.`` for ``/``), e.g. ``("encoder.layers.{i}.", "block_{i}.")``; they are used in
both directions, and the first rule whose pattern matches the start of a name rewrites it.
The walk traces ``apply``, so every function here takes an example input ``x`` (as ``init``).

PyTorch's stacked recurrent states ``h0``/``c0`` and ``h_n``/``c_n``
``(num_layers * num_directions, B, H)`` convert with :func:`initial_carry_from_torch` (to the
side input ``"initial_carry"``) and :func:`final_carry_to_torch` (from the ``carry`` taps).

Each layer kind converts its layout with one table of conversions used in both directions
(``Dense`` <- ``nn.Linear``, ``Conv``/``ConvTranspose`` <- ``nn.ConvNd``/``ConvTransposeNd``,
``RNN`` <- ``nn.LSTM``/``nn.GRU``/``nn.RNN``, ``MultiHeadAttention`` <- ``nn.MultiheadAttention``,
the normalizations, ``Embedding``, ``PReLU``).

Lossy in one direction only: PyTorch's LSTM/GRU/RNN keep two biases (``bias_ih``, ``bias_hh``)
whose sum nn_jax keeps as one ``b`` (GRU: plus ``b_hn``); :func:`to_torch` writes the sum to
``bias_ih`` and zeros to ``bias_hh`` (GRU: ``b_hn`` to ``bias_hh``'s ``n`` slice), which
computes the same function.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax.attention import MultiHeadAttention
from nn_jax.conv import Conv, ConvTranspose
from nn_jax.core import Layer, Params, Side, State, check_layer, tapping
from nn_jax.dense import Dense
from nn_jax.embedding import Embedding
from nn_jax.errors import ArgumentError, FileFormatError, ParamsError
from nn_jax.inspect import flatten_params, unflatten_params
from nn_jax.normalization import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from nn_jax.recurrent import RNN, Bidirectional, GRUCell, LSTMCell, StackedRNN
from nn_jax.transformer import TransformerDecoderBlock, TransformerEncoderBlock

__all__ = [
    "TorchReport",
    "compare_torch",
    "final_carry_to_torch",
    "from_torch",
    "initial_carry_from_torch",
    "load_state_dict",
    "save_state_dict",
    "to_torch",
]

StateDict = Mapping[str, np.ndarray]
Rules = Sequence[tuple[str, str]]
Shape = tuple[int, ...]

# --------------------------------------------------------------------------------------------
# Reading and writing safetensors files.


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as NumPy arrays (``safetensors.numpy.load_file``).

    Args:
        path: a ``.safetensors`` file, e.g. written by
            ``safetensors.torch.save_file(model.state_dict(), path)``.

    Raises:
        FileFormatError: the file is missing or not a safetensors file.
    """
    from safetensors.numpy import load_file

    try:
        return dict(load_file(os.fspath(path)))
    except Exception as e:  # OSError, or safetensors' SafetensorError for a corrupt file
        raise FileFormatError(f"load_state_dict: cannot read {os.fspath(path)!r}: {e}") from e


def save_state_dict(
    state_dict: StateDict,
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``{name: array}`` to a safetensors file that ``torch``'s ``load_file`` reads.

    Args:
        state_dict: PyTorch names to NumPy (or JAX) arrays, e.g. from :func:`to_torch`.
        path: the ``.safetensors`` file to write.
        metadata: optional string-to-string metadata stored in the header.
    """
    from safetensors.numpy import save_file

    tensors = {k: np.ascontiguousarray(np.asarray(v)) for k, v in state_dict.items()}
    save_file(tensors, os.fspath(path), metadata=dict(metadata) if metadata else None)


def _as_state_dict(state_dict: StateDict | str | os.PathLike[str]) -> dict[str, np.ndarray]:
    if isinstance(state_dict, str | os.PathLike):
        return load_state_dict(state_dict)
    if not isinstance(state_dict, Mapping) or not all(isinstance(k, str) for k in state_dict):
        raise ArgumentError(
            "from_torch: state_dict must be a safetensors path or a dict from PyTorch names to "
            f"NumPy arrays, given {type(state_dict).__name__}"
        )
    return {k: np.asarray(v) for k, v in state_dict.items()}


# --------------------------------------------------------------------------------------------
# The conversions: one entry per group of tensors, both directions side by side.

ToJax = Callable[[tuple[np.ndarray, ...], tuple[Shape, ...]], tuple[np.ndarray, ...]]
ToTorch = Callable[[tuple[np.ndarray, ...]], tuple[np.ndarray, ...]]


@dataclasses.dataclass(frozen=True)
class _Conversion:
    """PyTorch tensors ``torch`` (local names) <-> nn_jax leaves ``jax`` (paths in the layer).

    ``to_jax(torch arrays, target shapes)`` and ``to_torch(jax arrays)`` are inverse maps
    (up to the bias split of recurrent cells). ``collection`` is ``"params"`` or ``"state"``.
    ``optional``: when the nn_jax layer has no such leaf, the PyTorch tensors are ignored
    (BatchNorm's ``num_batches_tracked`` without ``momentum=None``).
    """

    torch: tuple[str, ...]
    jax: tuple[str, ...]
    to_jax: ToJax
    to_torch: ToTorch
    collection: str = "params"
    optional: bool = False


def _same() -> tuple[ToJax, ToTorch]:
    return (lambda a, s: a), (lambda a: a)


def _permuted(perm: Callable[[int], tuple[int, ...]]) -> tuple[ToJax, ToTorch]:
    """Axes permuted by ``perm(ndim)`` one way, by its inverse the other."""

    def to_jax(a: tuple[np.ndarray, ...], s: tuple[Shape, ...]) -> tuple[np.ndarray, ...]:
        return (np.transpose(a[0], perm(a[0].ndim)),)

    def to_torch(a: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        return (np.transpose(a[0], np.argsort(perm(a[0].ndim))),)

    return to_jax, to_torch


def _kernel_perm(ndim: int) -> tuple[int, ...]:
    """PyTorch ``(O, I, *k)`` -> nn_jax ``(*k, I, O)``."""
    return (*range(2, ndim), 1, 0)


def _matrix(split_out: bool) -> tuple[ToJax, ToTorch]:
    """A PyTorch ``(out, in)`` matrix <-> its transpose reshaped to the target.

    ``split_out`` (attention ``w_q/w_k/w_v``, target ``(in, H, D)``): the target keeps the
    first axis; otherwise (``w_o``, target ``(H, D, out)``) it keeps the last.
    """

    def to_jax(a: tuple[np.ndarray, ...], s: tuple[Shape, ...]) -> tuple[np.ndarray, ...]:
        return tuple(x.T.reshape(shape) for x, shape in zip(a, s, strict=True))

    def to_torch(a: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        flat = (x.reshape(x.shape[0], -1) if split_out else x.reshape(-1, x.shape[-1]) for x in a)
        return tuple(x.T for x in flat)

    return to_jax, to_torch


def _packed(rows: bool) -> tuple[ToJax, ToTorch]:
    """One PyTorch tensor packing three nn_jax ones (``in_proj_weight``: rows; bias: entries)."""

    def to_jax(a: tuple[np.ndarray, ...], s: tuple[Shape, ...]) -> tuple[np.ndarray, ...]:
        sizes = np.cumsum([int(np.prod(shape)) // (a[0].shape[1] if rows else 1) for shape in s])
        parts = np.split(a[0], sizes[:-1], axis=0)
        return tuple((p.T if rows else p).reshape(shape) for p, shape in zip(parts, s, strict=True))

    def to_torch(a: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        if rows:
            return (np.concatenate([x.reshape(x.shape[0], -1).T for x in a], axis=0),)
        return (np.concatenate([x.reshape(-1) for x in a]),)

    return to_jax, to_torch


def _conv(name: str, *paths: str, **kw: Any) -> _Conversion:
    """A conversion of one PyTorch tensor ``name`` (``to_*`` given by a pair maker in ``kw``)."""
    pair = kw.pop("pair", _same())
    return _Conversion((name,), paths or (name,), pair[0], pair[1], **kw)


def _dense(layer: Any, shapes: Mapping[str, Shape]) -> list[_Conversion]:
    return [_conv("weight", "w", pair=_permuted(lambda n: (1, 0))), _conv("bias", "b")]


def _conv_layer(layer: Any, shapes: Mapping[str, Shape]) -> list[_Conversion]:
    # ConvTranspose: PyTorch's (C_in, F / groups, *k) is the kernel of the forward Conv it is
    # the adjoint of, (O, I, *k), and nn_jax keeps that Conv's kernel (*k, F / groups, C_in):
    # the same permutation as Conv, and no spatial flip (both define the exact adjoint).
    return [_conv("weight", "w", pair=_permuted(_kernel_perm)), _conv("bias", "b")]


def _affine(layer: Any, shapes: Mapping[str, Shape]) -> list[_Conversion]:
    return [_conv("weight", "scale"), _conv("bias", "b")]


def _batch_norm(layer: Any, shapes: Mapping[str, Shape]) -> list[_Conversion]:
    to_jax, _ = _same()
    counter = _Conversion(
        ("num_batches_tracked",),
        ("num_batches_tracked",),
        to_jax,
        lambda a: (a[0].astype(np.int64),),  # PyTorch's buffer is int64
        collection="state",
        optional=True,
    )
    return [
        *_affine(layer, shapes),
        _conv("running_mean", "mean", collection="state"),
        _conv("running_var", "var", collection="state"),
        counter,
    ]


def _embedding(layer: Any, shapes: Mapping[str, Shape]) -> list[_Conversion]:
    return [_conv("weight", "table")]


def _prelu(layer: Any, shapes: Mapping[str, Shape]) -> list[_Conversion]:
    def to_jax(a: tuple[np.ndarray, ...], s: tuple[Shape, ...]) -> tuple[np.ndarray, ...]:
        return (a[0].reshape(s[0]),)

    return [_Conversion(("weight",), ("alpha",), to_jax, lambda a: (a[0].reshape(-1),))]


def _attention(layer: Any, shapes: Mapping[str, Shape]) -> list[_Conversion]:
    """``nn.MultiheadAttention``: ``in_proj_*`` packed when the key and value inputs have the
    query's size (PyTorch's rule), else ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``
    (the bias stays packed); heads split into nn_jax's ``(F, H, D)``; ``out_proj``."""
    sizes = {shapes.get(f"w_{n}", (0,))[0] for n in "qkv"}
    table = []
    if len(sizes) == 1:
        pair = _packed(rows=True)
        table.append(_Conversion(("in_proj_weight",), ("w_q", "w_k", "w_v"), *pair))
    else:
        for n in "qkv":
            table.append(_conv(f"{n}_proj_weight", f"w_{n}", pair=_matrix(split_out=True)))
    table.append(_conv("out_proj.weight", "w_o", pair=_matrix(split_out=False)))
    if layer.use_bias:
        pair = _packed(rows=False)
        table.append(_Conversion(("in_proj_bias",), ("b_q", "b_k", "b_v"), *pair))
        table.append(_conv("out_proj.bias", "b_o"))
    return table


def _rnn(layer: Any, shapes: Mapping[str, Shape]) -> list[_Conversion]:
    """``nn.LSTM``/``nn.GRU``/``nn.RNN`` weights of one layer and direction (names get the
    ``_l{k}[_reverse]`` suffix later): ``w_i = weight_ih.T``, ``w_h = weight_hh.T``; biases
    summed (GRU: ``bias_hh``'s ``n`` slice is ``b_hn``)."""
    cell = layer.cell
    pair = _permuted(lambda n: (1, 0))
    table = [
        _conv("weight_ih", "cell/w_i", pair=pair),
        _conv("weight_hh", "cell/w_h", pair=pair),
    ]
    if isinstance(cell, GRUCell):
        h = cell.hidden

        def gru_to_jax(a: tuple[np.ndarray, ...], s: tuple[Shape, ...]) -> tuple[np.ndarray, ...]:
            b_ih, b_hh = a
            b = b_ih + np.concatenate([b_hh[: 2 * h], np.zeros_like(b_hh[2 * h :])])
            return b, b_hh[2 * h :]

        def gru_to_torch(a: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
            b, b_hn = a
            return b, np.concatenate([np.zeros_like(b[: 2 * h]), b_hn])

        bias = _Conversion(
            ("bias_ih", "bias_hh"), ("cell/b", "cell/b_hn"), gru_to_jax, gru_to_torch
        )
    else:
        bias = _Conversion(
            ("bias_ih", "bias_hh"),
            ("cell/b",),
            lambda a, s: (a[0] + a[1],),
            lambda a: (a[0], np.zeros_like(a[0])),
        )
    return [*table, bias]


_Table = Callable[[Any, Mapping[str, Shape]], list[_Conversion]]


def _kinds() -> dict[type, _Table]:
    """The layer kinds with a PyTorch twin (``PReLU`` when the installed nn_jax has it)."""
    from nn_jax import dense

    kinds: dict[type, _Table] = {
        Dense: _dense,
        Conv: _conv_layer,
        ConvTranspose: _conv_layer,
        BatchNorm: _batch_norm,
        LayerNorm: _affine,
        RMSNorm: _affine,
        GroupNorm: _affine,
        InstanceNorm: _affine,
        Embedding: _embedding,
        MultiHeadAttention: _attention,
        RNN: _rnn,
    }
    prelu = getattr(dense, "PReLU", None)
    if isinstance(prelu, type):
        kinds[prelu] = _prelu
    return kinds


_ENCODER_NAMES = {
    "attention": "self_attn",
    "attention_norm": "norm1",
    "mlp/up": "linear1",
    "mlp/down": "linear2",
    "mlp_norm": "norm2",
}
_DECODER_NAMES = {
    "self_attention": "self_attn",
    "self_attention_norm": "norm1",
    "cross_attention": "multihead_attn",
    "cross_attention_norm": "norm2",
    "mlp/up": "linear1",
    "mlp/down": "linear2",
    "mlp_norm": "norm3",
}
_CHILD_NAMES: dict[type, dict[str, str]] = {
    TransformerEncoderBlock: _ENCODER_NAMES,  # nn.TransformerEncoderLayer
    TransformerDecoderBlock: _DECODER_NAMES,  # nn.TransformerDecoderLayer
}


def _zoo_names(parent: Layer | None) -> dict[str, str]:
    """The zoo's transformer models: their blocks are an ``nn.TransformerEncoder`` named
    ``encoder`` (``encoder.layers.{i}``, final norm ``encoder.norm``), beside ``embedding``
    and ``head``, as in PyTorch's transformer tutorial."""
    from nn_jax.models.transformer import TransformerEncoder, TransformerLM

    if not isinstance(parent, TransformerEncoder | TransformerLM):
        return {}
    names = {f"block_{i}": f"encoder.layers.{i}" for i in range(parent.num_layers)}
    return {**names, "final_norm": "encoder.norm"}


# --------------------------------------------------------------------------------------------
# Walking the model and naming its tensors.


def _layers(
    model: Layer, params: Params, state: State, x: Any, side: Side | None
) -> dict[str, Layer]:
    """Every layer of ``model`` by path (``""`` is the model), from the taps of one traced apply."""

    def run(p: Params, s: State, x: Any) -> Any:
        return model.apply(p, s, x, side=side, train=False)[0]

    with tapping(()) as taps:
        jax.eval_shape(run, params, state, x)
    return {"": model, **taps.layers}


def _torch_prefixes(layers: Mapping[str, Layer]) -> dict[str, tuple[str, str]]:
    """``{path: (PyTorch name prefix, recurrent suffix)}`` for every layer path."""
    out: dict[str, tuple[str, str]] = {}
    for path in layers:
        parts = path.split("/") if path else []
        names: list[str] = []
        index, reverse, i = 0, False, 0
        while i < len(parts):
            parent = layers.get("/".join(parts[:i]))
            renames = _CHILD_NAMES.get(type(parent)) or _zoo_names(parent)
            two = "/".join(parts[i : i + 2])
            if isinstance(parent, StackedRNN) and parts[i].isdigit():  # not "dropout_0"
                index, i = int(parts[i]), i + 1
            elif isinstance(parent, Bidirectional):
                reverse, i = parts[i] == "backward", i + 1
            elif two in renames and i + 1 < len(parts):
                names.append(renames[two])
                i += 2
            else:
                names.append(renames.get(parts[i], parts[i]))
                i += 1
        prefix = "".join(f"{n}." for n in names)
        out[path] = (prefix, f"_l{index}" + ("_reverse" if reverse else ""))
    return out


def _rule_regex(pattern: str) -> re.Pattern[str]:
    pieces = re.split(r"\{(\w+)\}", pattern)
    regex = "".join(
        re.escape(p) if k % 2 == 0 else f"(?P<{p}>[^./]+)" for k, p in enumerate(pieces)
    )
    return re.compile(regex)


def _check_rules(rules: Rules | None, where: str) -> list[tuple[str, str]]:
    if rules is None:
        return []
    if not isinstance(rules, list | tuple) or not all(
        isinstance(r, tuple | list) and len(r) == 2 and all(isinstance(s, str) for s in r)
        for r in rules
    ):
        raise ArgumentError(
            f"{where}: rules must be a list of (torch_pattern, nn_jax_pattern) string pairs, "
            f'e.g. [("encoder.layers.{{i}}.", "block_{{i}}.")], given {rules!r}'
        )
    for source, target in rules:
        if sorted(re.findall(r"\{(\w+)\}", source)) != sorted(re.findall(r"\{(\w+)\}", target)):
            raise ArgumentError(
                f"{where}: rule ({source!r}, {target!r}) must use the same {{fields}} on both sides"
            )
    return [(str(a), str(b)) for a, b in rules]


def _rename(name: str, rules: list[tuple[str, str]], reverse: bool = False) -> str:
    """``name`` with the first matching rule applied (PyTorch -> nn_jax, or back)."""
    for source, target in rules:
        if reverse:
            source, target = target, source
        match = _rule_regex(source).match(name)
        if match:
            return target.format(**match.groupdict()) + name[match.end() :]
    return name


# --------------------------------------------------------------------------------------------
# The report and the conversion.


@dataclasses.dataclass(frozen=True)
class TorchReport:
    """How a PyTorch ``state_dict`` matches an nn_jax model, made by :func:`compare_torch`.

    Attributes:
        unmatched: PyTorch names no nn_jax leaf takes.
        missing: ``(nn_jax path, expected PyTorch names)`` of leaves no PyTorch tensor fills.
        mis_shaped: ``(PyTorch name, its shape, the shape expected, the nn_jax leaves)`` of
            tensors whose shape does not fit the nn_jax leaves they fill (the expected shape
            is in PyTorch's layout; the leaves are named with their paths and shapes).
        bad_dtypes: ``(PyTorch name, message)`` of tensors that would not cast safely to the
            nn_jax leaf's dtype (a float into an integer leaf, a value that changes).
        ignored: PyTorch names deliberately not used (``num_batches_tracked`` without a
            counter in the nn_jax state).
    """

    unmatched: tuple[str, ...] = ()
    missing: tuple[tuple[str, tuple[str, ...]], ...] = ()
    mis_shaped: tuple[tuple[str, Shape, Shape, str], ...] = ()
    bad_dtypes: tuple[tuple[str, str], ...] = ()
    ignored: tuple[str, ...] = ()

    def message(self, *, allow_unmatched: bool = False, allow_missing: bool = False) -> str:
        """The problems not allowed, one per line (``""`` when there are none)."""
        lines = []
        for name, shape, want, leaf in self.mis_shaped:
            lines.append(
                f"mis-shaped: PyTorch {name!r} has shape {shape}, expected {want} for nn_jax {leaf}"
            )
        lines += [f"bad dtype: PyTorch {name!r}: {msg}" for name, msg in self.bad_dtypes]
        if not allow_unmatched:
            lines += [
                f"unmatched: PyTorch {name!r} matches no nn_jax leaf" for name in self.unmatched
            ]
        if not allow_missing:
            lines += [
                f"missing: nn_jax {path!r} has no PyTorch tensor (expected {list(names)})"
                for path, names in self.missing
            ]
        return "\n".join(lines)


@dataclasses.dataclass
class _Plan:
    """Every conversion placed: ``(conversion, PyTorch full names, nn_jax full paths)``."""

    items: list[tuple[_Conversion, tuple[str, ...], tuple[str, ...]]]


def _plan(
    model: Layer,
    params: Params,
    state: State,
    x: Any,
    side: Side | None,
    rules: list[tuple[str, str]],
) -> _Plan:
    layers = _layers(model, params, state, x, side)
    prefixes = _torch_prefixes(layers)
    flat = {"params": flatten_params(params), "state": flatten_params(state)}
    kinds = _kinds()
    items = []
    for path, layer in layers.items():
        table = kinds.get(type(layer))
        if table is None:
            continue
        prefix, suffix = prefixes[path]
        base = f"{path}/" if path else ""
        shapes = {
            leaf[len(base) :]: tuple(np.shape(v))
            for leaf, v in flat["params"].items()
            if leaf.startswith(base)
        }
        for conversion in table(layer, shapes):
            if isinstance(layer, RNN):
                torch_names = tuple(prefix + n + suffix for n in conversion.torch)
            else:
                torch_names = tuple(prefix + n for n in conversion.torch)
            torch_names = tuple(_rename(n, rules, reverse=True) for n in torch_names)
            jax_paths = tuple(base + p for p in conversion.jax)
            items.append((conversion, torch_names, jax_paths))
    return _Plan(items)


def _cast(name: str, value: np.ndarray, dtype: Any) -> tuple[np.ndarray | None, str]:
    """``value`` cast to ``dtype``, or ``(None, why)`` when the cast would lose information."""
    dtype = np.dtype(dtype)
    source = value.dtype
    if source == dtype:
        return value, ""
    if np.issubdtype(source, np.floating) and not np.issubdtype(dtype, np.floating):
        return None, f"dtype {source} cannot go into an nn_jax leaf of dtype {dtype}"
    with np.errstate(over="ignore", invalid="ignore"):
        cast = value.astype(dtype)
    if np.issubdtype(source, np.floating):  # float -> float: rounding is fine, overflow is not
        if not np.array_equal(np.isfinite(cast), np.isfinite(value)):
            return None, f"values overflow dtype {dtype} (largest |value| {np.abs(value).max()})"
        return cast, ""
    if not np.array_equal(cast.astype(source), value):
        return None, f"dtype {source} values change when cast to {dtype}"
    return cast, ""


def compare_torch(
    model: Layer,
    state_dict: StateDict | str | os.PathLike[str],
    params: Params,
    state: State | None = None,
    *,
    x: Any,
    side: Side | None = None,
    rules: Rules | None = None,
) -> tuple[TorchReport, Params, State]:
    """Match a PyTorch ``state_dict`` against an nn_jax model; convert what matches.

    Args:
        model: the nn_jax twin of the PyTorch module.
        state_dict: a safetensors path, or PyTorch names to NumPy arrays.
        params, state: the model's params and state from ``model.init`` (the target tree:
            shapes, dtypes, and the values kept where no PyTorch tensor matches).
        x: an example input, as for ``init`` (the layer tree is read by tracing ``apply``).
        side: side inputs the model needs to trace ``apply``.
        rules: ``(torch_pattern, nn_jax_pattern)`` name rules (see the module docstring).

    Returns:
        ``(report, params, state)``: the :class:`TorchReport` and the converted trees (every
        matched, well-shaped tensor cast to its leaf's dtype; other leaves as given).
    """
    check_layer("compare_torch", model)
    rules_ = _check_rules(rules, "compare_torch")
    tensors = _as_state_dict(state_dict)
    state = {} if state is None else state
    if not isinstance(params, Mapping) or not isinstance(state, Mapping):
        raise ArgumentError(
            "compare_torch: params and state must be the dicts model.init returns, given "
            f"{type(params).__name__} and {type(state).__name__}"
        )
    plan = _plan(model, params, state, x, side, rules_)
    flat = {"params": flatten_params(params), "state": flatten_params(state)}
    out = {k: dict(v) for k, v in flat.items()}
    filled: set[tuple[str, str]] = set()
    used: set[str] = set()
    ignored: list[str] = []
    mis_shaped: list[tuple[str, Shape, Shape, str]] = []
    bad_dtypes: list[tuple[str, str]] = []
    for conversion, names, paths in plan.items:
        leaves = flat[conversion.collection]
        present = all(n in tensors for n in names)
        if not all(p in leaves for p in paths):
            if conversion.optional and present:
                ignored += names
                used.update(names)
            continue
        if not present:
            continue
        used.update(names)
        targets = tuple(tuple(np.shape(leaves[p])) for p in paths)
        zeros = tuple(
            np.zeros(t, np.dtype(leaves[p].dtype)) for p, t in zip(paths, targets, strict=True)
        )
        wanted = tuple(tuple(a.shape) for a in conversion.to_torch(zeros))
        wrong = [n for n, w in zip(names, wanted, strict=True) if tensors[n].shape != w]
        if wrong:
            leaf = " and ".join(f"{p!r} of shape {t}" for p, t in zip(paths, targets, strict=True))
            for n, w in zip(names, wanted, strict=True):
                if n in wrong:
                    mis_shaped.append((n, tuple(tensors[n].shape), w, leaf))
            continue
        converted = conversion.to_jax(tuple(tensors[n] for n in names), targets)
        for i, path in enumerate(paths):
            value = converted[i]
            cast, why = _cast(names[0], value, np.dtype(leaves[path].dtype))
            if cast is None:
                bad_dtypes.append((names[min(i, len(names) - 1)], why))
                continue
            out[conversion.collection][path] = jnp.asarray(cast)
            filled.add((conversion.collection, path))
    expected: dict[tuple[str, str], tuple[str, ...]] = {}
    for conversion, names, paths in plan.items:
        for p in paths:
            expected[(conversion.collection, p)] = names
    missing = tuple(
        (path, expected.get((coll, path), ()))
        for coll in ("params", "state")
        for path in flat[coll]
        if (coll, path) not in filled
    )
    report = TorchReport(
        unmatched=tuple(sorted(set(tensors) - used)),
        missing=missing,
        mis_shaped=tuple(mis_shaped),
        bad_dtypes=tuple(bad_dtypes),
        ignored=tuple(ignored),
    )
    return report, unflatten_params(out["params"]), unflatten_params(out["state"])


def from_torch(
    model: Layer,
    state_dict: StateDict | str | os.PathLike[str],
    params: Params,
    state: State | None = None,
    *,
    x: Any,
    side: Side | None = None,
    rules: Rules | None = None,
    allow_unmatched: bool = False,
    allow_missing: bool = False,
) -> tuple[Params, State]:
    """nn_jax ``(params, state)`` holding a PyTorch ``state_dict``'s weights.

    Each matched tensor is converted to nn_jax's layout and cast to the dtype of the leaf it
    fills (float64 -> float32 rounds; a float into an integer leaf, or an integer that
    changes, is an error).

    Args:
        model: the nn_jax twin of the PyTorch module (same sizes and options).
        state_dict: a safetensors path, or PyTorch names to NumPy arrays.
        params, state: from ``model.init`` (the target tree; kept where allowed to be missing).
        x: an example input, as for ``init``.
        side: side inputs the model needs to trace ``apply``.
        rules: ``(torch_pattern, nn_jax_pattern)`` name rules (see the module docstring).
        allow_unmatched: ignore PyTorch tensors that match no nn_jax leaf.
        allow_missing: keep the given values of nn_jax leaves no PyTorch tensor fills.

    Returns:
        ``(params, state)`` of the same structure as the given ones.

    Raises:
        ParamsError: a tensor is mis-shaped (both shapes and the path are named) or cannot be
            cast safely, or one is unmatched / missing without the matching ``allow_*`` flag.

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from nn_jax import Dense
    >>> layer = Dense(3)
    >>> params, state = layer.init(jax.random.key(0), jnp.zeros((1, 2)))
    >>> sd = {"weight": np.ones((3, 2), np.float32), "bias": np.zeros(3, np.float32)}
    >>> params, _ = from_torch(layer, sd, params, state, x=jnp.zeros((1, 2)))
    >>> jax.tree.map(jnp.shape, params)
    {'b': (3,), 'w': (2, 3)}
    """
    report, params, state = compare_torch(
        model, state_dict, params, state, x=x, side=side, rules=rules
    )
    message = report.message(allow_unmatched=allow_unmatched, allow_missing=allow_missing)
    if message:
        raise ParamsError(
            f"from_torch: the PyTorch state_dict does not fit {type(model).__name__}:\n{message}"
        )
    return params, state


def to_torch(
    model: Layer,
    params: Params,
    state: State | None = None,
    *,
    x: Any,
    side: Side | None = None,
    rules: Rules | None = None,
) -> dict[str, np.ndarray]:
    """A PyTorch ``state_dict`` (NumPy arrays, PyTorch names and layouts) of nn_jax weights.

    The inverse of :func:`from_torch` (same conversion table, same ``rules``). Leaves with no
    PyTorch twin are left out. Recurrent biases: see the module docstring. Save it with
    :func:`save_state_dict` and load it in PyTorch with ``safetensors.torch.load_file``.

    Args:
        model: the nn_jax model.
        params, state: its params and state.
        x: an example input, as for ``init``.
        side: side inputs the model needs to trace ``apply``.
        rules: the name rules given to :func:`from_torch`.

    Returns:
        ``{PyTorch name: array}``.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax import Conv
    >>> conv = Conv(8, (3, 3), data_format="channels_first")
    >>> params, _ = conv.init(jax.random.key(0), jnp.zeros((1, 3, 5, 5)))
    >>> {k: v.shape for k, v in to_torch(conv, params, x=jnp.zeros((1, 3, 5, 5))).items()}
    {'weight': (8, 3, 3, 3), 'bias': (8,)}
    """
    check_layer("to_torch", model)
    rules_ = _check_rules(rules, "to_torch")
    if state is None:  # the walk traces apply, which needs the state's structure
        state = jax.eval_shape(model.init, jax.random.key(0), x)[1]
    plan = _plan(model, params, state, x, side, rules_)
    flat = {"params": flatten_params(params), "state": flatten_params(state)}
    out: dict[str, np.ndarray] = {}
    for conversion, names, paths in plan.items:
        leaves = flat[conversion.collection]
        if not all(p in leaves for p in paths):
            continue
        arrays = conversion.to_torch(tuple(np.asarray(leaves[p]) for p in paths))
        out.update({n: np.ascontiguousarray(a) for n, a in zip(names, arrays, strict=True)})
    return out


# --------------------------------------------------------------------------------------------
# Recurrent carries: PyTorch's stacked (num_layers * num_directions, B, H) <-> nn_jax's dicts.


def _recurrent_slots(model: Layer) -> list[tuple[str, ...]]:
    """The ``initial_carry`` keys of each PyTorch slot ``k * num_directions + d``, in order."""
    layers = model.layers if isinstance(model, StackedRNN) else (model,)
    slots: list[tuple[str, ...]] = []
    for i, layer in enumerate(layers):
        head = (str(i),) if isinstance(model, StackedRNN) else ()
        if isinstance(layer, Bidirectional):
            slots += [(*head, "forward"), (*head, "backward")]
        elif isinstance(layer, RNN):
            slots.append(head)
        else:
            raise ArgumentError(
                f"recurrent carries: expected an RNN, Bidirectional or StackedRNN, given {layer!r}"
            )
    return slots


def _is_lstm(model: Layer) -> bool:
    layer = model.layers[0] if isinstance(model, StackedRNN) else model
    layer = layer.layer if isinstance(layer, Bidirectional) else layer
    return isinstance(getattr(layer, "cell", None), LSTMCell)


def initial_carry_from_torch(model: Layer, h0: Any, c0: Any = None) -> Any:
    """The side input ``"initial_carry"`` for PyTorch's ``h0`` (and LSTM ``c0``).

    Args:
        model: an :class:`RNN`, :class:`Bidirectional` or :class:`StackedRNN` (of either).
        h0: ``(num_layers * num_directions, B, H)``, PyTorch's order (layer ``k`` direction
            ``d`` at ``k * num_directions + d``).
        c0: the LSTM cell state, same shape (``None`` for GRU and Elman RNNs).

    Returns:
        The carry for ``apply(..., side={"initial_carry": carry})``: ``h`` or ``(h, c)`` for
        an ``RNN``, ``{"forward": ..., "backward": ...}`` for a ``Bidirectional``, and
        ``{"0": ..., "1": ...}`` of those for a ``StackedRNN``.
    """
    slots = _recurrent_slots(model)
    h0 = jnp.asarray(h0)
    if h0.ndim != 3 or h0.shape[0] != len(slots) or (c0 is not None and jnp.shape(c0) != h0.shape):
        raise ArgumentError(
            f"initial_carry_from_torch: h0 (and c0) must be (num_layers * num_directions = "
            f"{len(slots)}, B, H), given {h0.shape} and {None if c0 is None else jnp.shape(c0)}"
        )
    if (c0 is None) == _is_lstm(model):
        raise ArgumentError("initial_carry_from_torch: give c0 for an LSTM and only for an LSTM")
    if not slots[0]:
        return h0[0] if c0 is None else (h0[0], jnp.asarray(c0)[0])
    tree: dict[str, Any] = {}
    for k, slot in enumerate(slots):
        node = tree
        for part in slot[:-1]:
            node = node.setdefault(part, {})
        node[slot[-1]] = h0[k] if c0 is None else (h0[k], jnp.asarray(c0)[k])
    return tree


def final_carry_to_torch(model: Layer, taps: Mapping[str, Any], prefix: str = "") -> Any:
    """PyTorch's ``h_n`` (GRU, RNN) or ``(h_n, c_n)`` (LSTM) from the final-carry taps.

    Args:
        model: an :class:`RNN`, :class:`Bidirectional` or :class:`StackedRNN`.
        taps: tapped values of one apply, e.g. from
            ``apply_with_intermediates(..., capture="*carry")``.
        prefix: the model's path inside a larger model (``""`` when it is the model applied).

    Returns:
        ``h_n`` of shape ``(num_layers * num_directions, B, H)``, or the pair ``(h_n, c_n)``.
    """
    carries = []
    for slot in _recurrent_slots(model):
        path = "/".join([*([prefix] if prefix else []), *slot, "carry"])
        if path not in taps:
            raise ArgumentError(
                f"final_carry_to_torch: no tap {path!r}; apply with "
                f"apply_with_intermediates(..., capture='*carry'), given taps {sorted(taps)}"
            )
        carries.append(taps[path])
    if _is_lstm(model):
        return jnp.stack([c[0] for c in carries]), jnp.stack([c[1] for c in carries])
    return jnp.stack(carries)
