"""Recurrent layers: ``SimpleRNNCell``, ``LSTMCell``, ``GRUCell`` and the ``RNN`` that scans them.

A **cell** is one time step. As a layer its input is the pair ``(carry, x_t)`` and its output the
pair ``(new_carry, y_t)``, with the one layer signature
``apply(params, state, (carry, x_t)) -> ((new_carry, y_t), {})``. The initial carry is zeros
(:meth:`RecurrentCell.initial_carry`). Cells accept any leading batch shape: ``x_t`` is
``(*batch, F)`` and ``h`` is ``(*batch, H)``.

Each cell splits its step in two, :meth:`RecurrentCell.input_projection` (``x_t @ w_i + b``, no
dependence on the carry; all gates as one ``(*batch, G*H)`` array) and :meth:`RecurrentCell.step`
(the rest: ``h @ w_h`` is added to the whole projection at once, then split into the gates, as a
hand-written JAX cell does). ``RNN(..., hoist_input_projection=True)`` uses this to *hoist* the
input projection out of the time loop: one large matmul over all steps, then a ``jax.lax.scan``
doing only ``h @ w_h`` per step (the cuDNN design). It is off by default because on XLA:CPU it
measured slower: for an LSTM (F=32, H=128) a jitted forward+backward took 22 ms hoisted vs 17 ms
per step at (B=64, T=40), and 420 vs 240 ms at (B=256, T=100); only at a tiny batch (B=8) was it
ahead (8 vs 9 ms). The large ``(T, B, G*H)`` intermediate leaves the cache, while per step the
projection is consumed where it is made. On accelerators, measure both. A custom cell may keep
``input_projection`` as the identity and do all its work in ``step``.

Layout: batch-major ``(*batch, T, F)`` by default, ``(T, *batch, F)`` with ``time_major=True``.

Side inputs (``apply(..., side={...})``, see :mod:`nn_jax.core`), read by every :class:`RNN`:

* ``"lengths"``: ``(*batch,)`` ints in ``[0, T]``; steps ``t >= length`` are padding. A length
  past ``T`` or negative is a :class:`~nn_jax.errors.ValueRangeError` naming the RNN's path - at
  once for concrete lengths, under ``jax.jit`` in checked mode (:func:`nn_jax.checked`).
* ``"mask"``: bools shaped like the input without its feature axis (``(*batch, T)``, or
  ``(T, *batch)`` when time-major); ``True`` = a real step. Given with ``"lengths"``, a step is
  real when both say so (the two are combined with *and*).
* ``"initial_carry"``: the carry at the first processed step (default zeros), shaped like
  :meth:`RecurrentCell.initial_carry`. :class:`StackedRNN` and :class:`Bidirectional` do not pass
  one carry to all their RNNs: they take a dict keyed by child name (``{"0": ..., "1": ...}``,
  ``{"forward": ..., "backward": ...}``, nested for a stack of bidirectional layers) and give
  each child its own entry; a child without an entry starts from zeros.

At a masked step the carry is held unchanged and the output is zero, so padding changes
nothing: the outputs at real steps and the final carry equal those of the unpadded sequence, in
either direction (a reversed scan meets the padding first, while its carry is still the initial
one). The model zoo's ``RNNClassifier`` reads ``"lengths"`` the same way, so the train-step
builders and ``fit`` take batches ``(x, y, {"lengths": lengths})``.

The final carry is not part of the output (an ``RNN`` outputs its sequence, or its last real
step): it is exposed as the tap ``"<rnn path>/carry"``, read with
:func:`nn_jax.inspect.apply_with_intermediates` (``capture="*carry"``) or
:func:`nn_jax.core.tapping`.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from dataclasses import KW_ONLY
from typing import Any, cast

import jax
import jax.numpy as jnp

from nn_jax import initializers
from nn_jax._options import DtypeOptions
from nn_jax.activations import get_activation
from nn_jax.core import (
    Activation,
    Array,
    Block,
    Call,
    Initializer,
    Layer,
    Params,
    PRNGKey,
    Rate,
    Scope,
    Size,
    State,
    nested,
    tap,
)
from nn_jax.dense import add_bias, default_kernel_init, project
from nn_jax.errors import ConfigError, ShapeError
from nn_jax.masks import sequence_mask
from nn_jax.regularization import Dropout

__all__ = [
    "RNN",
    "Bidirectional",
    "GRUCell",
    "LSTMCell",
    "RecurrentCell",
    "SimpleRNNCell",
    "StackedRNN",
]

Carry = Any

default_recurrent_init: Initializer = initializers.orthogonal()
"""Orthogonal (Saxe et al., 2014), applied to each gate's ``(H, H)`` block of ``w_h``."""


def _gate_blocks(
    init: Initializer, key: PRNGKey, rows: int, hidden: int, gates: int, dtype: Any
) -> Array:
    """``gates`` independent ``(rows, hidden)`` draws of ``init``, side by side: ``(rows, G*H)``.

    A fan-in initializer gets ``fan_in=rows``.
    """
    keys = jax.random.split(key, gates)
    blocks = [initializers.initialize(init, k, (rows, hidden), dtype, fan_in=rows) for k in keys]
    return jnp.concatenate(blocks, axis=1)


@dataclasses.dataclass(frozen=True)
class RecurrentCell(Layer):
    """Base class of cells: ``(carry, x_t) -> (new_carry, y_t)``, split for hoisting.

    Subclasses implement :meth:`initial_carry`, :meth:`step` and ``init``, and may override
    :meth:`input_projection` (default: the identity) and :meth:`output`. Applied as a layer, a
    cell computes ``step(params, carry, input_projection(params, x_t))`` after checking the carry
    with :meth:`check_carry`. The projection may be any pytree of arrays whose leading axes are
    the input's (the time axis first, when :class:`RNN` calls it).
    """

    @abc.abstractmethod
    def initial_carry(self, batch_shape: tuple[int, ...], dtype: Any = jnp.float32) -> Carry:
        """The carry at ``t = 0`` (zeros) for inputs with leading shape ``batch_shape``."""

    def input_projection(self, params: Params, x: Array) -> Any:
        """The part of the step that reads only ``x`` (any leading shape, features last)."""
        return x

    @abc.abstractmethod
    def step(self, params: Params, carry: Carry, projected: Any) -> tuple[Carry, Array]:
        """One step from the carry and ``input_projection(params, x_t)``."""

    def output(self, carry: Carry) -> Array | None:
        """The output ``y_t`` of the step that returned ``carry``, read from it; ``None``: not
        in the carry (the default).

        When the carry holds the output (``h``), :class:`RNN` with ``return_sequences=False``
        reads the last output from the final carry instead of carrying it through its scan.
        """
        return None

    def check_carry(self, carry: Carry, x_t: Any, what: str = "carry") -> None:
        """Raise ``ShapeError`` unless ``carry`` matches :meth:`initial_carry` for ``x_t``.

        Args:
            carry: the carry to check (its tree structure and leaf shapes are compared).
            x_t: one step's input ``(*batch, F)`` (array or ``jax.ShapeDtypeStruct``).
            what: how the message names the carry (e.g. ``"side input 'initial_carry'"``).
        """
        self.check_rank(x_t, 1, what="x_t")
        batch, dtype = tuple(x_t.shape[:-1]), x_t.dtype
        expected = jax.eval_shape(lambda: self.initial_carry(batch, dtype))
        if jax.tree.map(jnp.shape, carry) != jax.tree.map(jnp.shape, expected) or any(
            tuple(jnp.shape(c)) != e.shape
            for c, e in zip(jax.tree.leaves(carry), jax.tree.leaves(expected), strict=True)
        ):
            raise self.error(
                ShapeError,
                f"{what} has shapes {jax.tree.map(jnp.shape, carry)}, expected "
                f"{jax.tree.map(lambda e: e.shape, expected)} for x_t of shape {tuple(x_t.shape)}",
            )

    def _split_input(self, x: Any) -> tuple[Carry, Any]:
        """The checked pair ``(carry, x_t)`` of a cell input."""
        if not isinstance(x, tuple) or len(x) != 2:
            raise self.error(
                ShapeError,
                f"expected the pair (carry, x_t) as input, given {type(x).__name__}; "
                "run a cell over a sequence with RNN(cell)",
            )
        carry, inputs = x
        if not isinstance(inputs, jax.ShapeDtypeStruct):
            inputs = jnp.asarray(inputs)
        self.check_carry(carry, inputs)
        return carry, inputs

    def compute(
        self, params: Params, state: State, x: Any, call: Call
    ) -> tuple[tuple[Carry, Array], State]:
        carry, inputs = self._split_input(x)
        return self.step(params, carry, self.input_projection(params, inputs)), {}


@dataclasses.dataclass(frozen=True)
class _DenseCell(RecurrentCell, DtypeOptions):
    """A cell with ``num_gates`` stacked pre-activations ``x @ w_i + h @ w_h + b``.

    Params: ``w_i: (F, G*H)``, ``w_h: (H, G*H)``, ``b: (G*H,)``; gate ``g`` occupies columns
    ``[g*H, (g+1)*H)``. The weight initializers are applied to each gate's block separately;
    ``b_init`` draws the whole ``(G*H,)``. Fan-in initializers
    (:class:`~nn_jax.initializers.FanInInitializer`) get ``fan_in`` ``F`` (``w_i``), ``H``
    (``w_h``) and ``F + H`` (``b``).
    """

    hidden: Size
    _: KW_ONLY
    w_i_init: Initializer = default_kernel_init
    w_h_init: Initializer = default_recurrent_init
    b_init: Initializer = initializers.zeros

    num_gates = 1

    def initial_carry(self, batch_shape: tuple[int, ...], dtype: Any = jnp.float32) -> Carry:
        return jnp.zeros((*batch_shape, self.hidden), self.dtype or dtype)

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        _, inputs = self._split_input(x)
        features = inputs.shape[-1]
        g, h = self.num_gates, self.hidden
        ki, kh, kb = jax.random.split(key, 3)
        dtype = self.param_dtype
        params = {
            "w_i": _gate_blocks(self.w_i_init, ki, features, h, g, dtype),
            "w_h": _gate_blocks(self.w_h_init, kh, h, h, g, dtype),
            "b": initializers.initialize(self.b_init, kb, (g * h,), dtype, fan_in=features + h),
        }
        return params, {}

    def _weights(self, params: Params) -> tuple[Array, Array, Array]:
        gh = self.num_gates * self.hidden
        w_i = self.param(params, "w_i")
        if w_i.ndim != 2 or w_i.shape[1] != gh:
            raise self.error(
                ShapeError, f"parameter 'w_i' has shape {w_i.shape}, expected (F, {gh})"
            )
        return w_i, self.param(params, "w_h", (self.hidden, gh)), self.param(params, "b", (gh,))

    def output(self, carry: Carry) -> Array:
        return carry

    def input_projection(self, params: Params, x: Array) -> Array:
        """``x @ w_i + b``, all gates in one ``(..., G*H)`` array (one matmul)."""
        w_i, _, b = self._weights(params)
        x = jnp.asarray(x)
        if x.shape[-1] != w_i.shape[0]:
            raise self.error(
                ShapeError,
                f"input last axis has size {x.shape[-1]} (input shape {x.shape}), expected "
                f"{w_i.shape[0]}, the size this cell was initialized with (w_i: {w_i.shape})",
            )
        dtype = self.dtype or jnp.result_type(x.dtype, w_i.dtype)
        return add_bias(
            project(x.astype(dtype), w_i.astype(dtype), self.precision), b.astype(dtype)
        )

    def _recurrent(self, params: Params, h: Array, dtype: Any) -> Array:
        """``h @ w_h`` in ``dtype``, all gates in one ``(..., G*H)`` array."""
        w_h = self.param(params, "w_h", (self.hidden, self.num_gates * self.hidden))
        return project(h.astype(dtype), w_h.astype(dtype), self.precision)

    def _preactivations(self, params: Params, h: Array, projected: Array) -> list[Array]:
        """The gates' pre-activations: ``x @ w_i + b + h @ w_h`` summed whole, then split into
        ``G`` arrays ``(..., H)`` (one add and one split per step, not one per gate)."""
        summed = projected + self._recurrent(params, h, projected.dtype)
        return jnp.split(summed, self.num_gates, axis=-1)


@dataclasses.dataclass(frozen=True)
class SimpleRNNCell(_DenseCell):
    """The Elman cell: ``h' = act(x @ w_i + h @ w_h + b)``; the output is ``h'``.

    Args:
        hidden: carry and output size ``H``.
        activation: a callable or name (default ``"tanh"``).
        w_i_init, w_h_init, b_init: initializers (LeCun normal, orthogonal, zeros).
        dtype, param_dtype, precision: as for :class:`~nn_jax.dense.Dense`.

    Input ``(h, x_t)`` with ``h: (*batch, H)``, ``x_t: (*batch, F)`` -> ``(h', h')``.
    Params: ``w_i: (F, H)``, ``w_h: (H, H)``, ``b: (H,)``.

    >>> import jax, jax.numpy as jnp
    >>> cell = SimpleRNNCell(4)
    >>> x = jnp.zeros((2, 3))
    >>> params, _ = cell.init(jax.random.key(0), (cell.initial_carry((2,)), x))
    >>> jax.tree.map(jnp.shape, params)
    {'b': (4,), 'w_h': (4, 4), 'w_i': (3, 4)}
    """

    _: KW_ONLY
    activation: Activation = "tanh"

    def step(self, params: Params, carry: Carry, projected: Any) -> tuple[Carry, Array]:
        (z,) = self._preactivations(params, carry, projected)
        h = get_activation(self.activation)(z)
        return h, h


@dataclasses.dataclass(frozen=True)
class LSTMCell(_DenseCell):
    """Long short-term memory (Hochreiter & Schmidhuber, 1997, with a forget gate).

    .. math::
        i, f, g, o &= \\text{split}_4(x W_i + h W_h + b) \\\\
        c' &= \\sigma(f) \\odot c + \\sigma(i) \\odot \\tanh(g) \\\\
        h' &= \\sigma(o) \\odot \\tanh(c')

    Gate layout: the columns of ``w_i``, ``w_h`` and ``b`` are ``[i | f | g | o]``, each ``H``
    wide (PyTorch's order: ``w_i = weight_ih_l0.T``, ``w_h = weight_hh_l0.T``,
    ``b = bias_ih_l0 + bias_hh_l0``). The carry is ``(h, c)`` and the output is ``h'``.

    Args:
        hidden: size ``H`` of ``h`` and ``c``.
        forget_bias: added to the forget gate's slice of ``b`` at initialization (default 1.0,
            Jozefowicz et al., 2015: the cell remembers by default; 0.0 is PyTorch's).
        w_i_init, w_h_init, b_init: initializers (LeCun normal, orthogonal per gate, zeros).
        dtype, param_dtype, precision: as for :class:`~nn_jax.dense.Dense`.

    Input ``((h, c), x_t)`` with ``h, c: (*batch, H)``, ``x_t: (*batch, F)`` ->
    ``((h', c'), h')``. Params: ``w_i: (F, 4H)``, ``w_h: (H, 4H)``, ``b: (4H,)``.

    >>> import jax, jax.numpy as jnp
    >>> cell = LSTMCell(4)
    >>> params, _ = cell.init(jax.random.key(0), (cell.initial_carry((2,)), jnp.zeros((2, 3))))
    >>> jax.tree.map(jnp.shape, params)
    {'b': (16,), 'w_h': (4, 16), 'w_i': (3, 16)}
    >>> params["b"][4:8]
    Array([1., 1., 1., 1.], dtype=float32)
    """

    _: KW_ONLY
    forget_bias: float = 1.0

    num_gates = 4

    def initial_carry(self, batch_shape: tuple[int, ...], dtype: Any = jnp.float32) -> Carry:
        zeros = jnp.zeros((*batch_shape, self.hidden), self.dtype or dtype)
        return zeros, zeros

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        params, state = super().init(key, x)
        h = self.hidden
        params["b"] = params["b"].at[h : 2 * h].add(jnp.asarray(self.forget_bias, self.param_dtype))
        return params, state

    def step(self, params: Params, carry: Carry, projected: Any) -> tuple[Carry, Array]:
        h, c = carry
        i, f, g, o = self._preactivations(params, h, projected)
        c = jax.nn.sigmoid(f) * c.astype(f.dtype) + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    def output(self, carry: Carry) -> Array:
        return carry[0]


@dataclasses.dataclass(frozen=True)
class GRUCell(_DenseCell):
    """Gated recurrent unit (Cho et al., 2014), in the cuDNN/PyTorch form (reset after ``w_h``).

    .. math::
        r &= \\sigma(x W_{ir} + b_r + h W_{hr}) \\\\
        z &= \\sigma(x W_{iz} + b_z + h W_{hz}) \\\\
        n &= \\tanh(x W_{in} + b_n + r \\odot (h W_{hn} + b_{hn})) \\\\
        h' &= (1 - z) \\odot n + z \\odot h

    Gate layout: columns ``[r | z | n]``, each ``H`` wide. PyTorch mapping:
    ``w_i = weight_ih_l0.T``, ``w_h = weight_hh_l0.T``, ``b = bias_ih_l0`` plus ``bias_hh_l0`` on
    the ``r`` and ``z`` slices, ``b_hn = bias_hh_l0[2H:]``. The carry is ``h``; the output is
    ``h'``.

    Args:
        hidden: size ``H``.
        w_i_init, w_h_init, b_init: initializers (LeCun normal, orthogonal per gate, zeros).
        b_hn_init: initializer of ``b_hn`` (default ``None``: ``b_init``); a fan-in
            initializer gets ``fan_in=H``.
        dtype, param_dtype, precision: as for :class:`~nn_jax.dense.Dense`.

    Input ``(h, x_t)`` with ``h: (*batch, H)``, ``x_t: (*batch, F)`` -> ``(h', h')``.
    Params: ``w_i: (F, 3H)``, ``w_h: (H, 3H)``, ``b: (3H,)``, ``b_hn: (H,)``.

    >>> import jax, jax.numpy as jnp
    >>> cell = GRUCell(4)
    >>> params, _ = cell.init(jax.random.key(0), (cell.initial_carry((2,)), jnp.zeros((2, 3))))
    >>> jax.tree.map(jnp.shape, params)
    {'b': (12,), 'b_hn': (4,), 'w_h': (4, 12), 'w_i': (3, 12)}
    """

    _: KW_ONLY
    b_hn_init: Initializer | None = None

    num_gates = 3

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        params, state = super().init(key, x)
        init = self.b_init if self.b_hn_init is None else self.b_hn_init
        h = self.hidden
        params["b_hn"] = initializers.initialize(
            init, jax.random.fold_in(key, 3), (h,), self.param_dtype, fan_in=h
        )
        return params, state

    def step(self, params: Params, carry: Carry, projected: Any) -> tuple[Carry, Array]:
        # r and z from one sum over the first 2H columns; n needs h @ w_hn on its own.
        rz_cols = [2 * self.hidden]
        x_rz, x_n = jnp.split(projected, rz_cols, axis=-1)
        h_rz, h_n = jnp.split(self._recurrent(params, carry, projected.dtype), rz_cols, axis=-1)
        b_hn = self.param(params, "b_hn", (self.hidden,)).astype(h_n.dtype)
        r, z = jnp.split(jax.nn.sigmoid(x_rz + h_rz), 2, axis=-1)
        n = jnp.tanh(x_n + r * add_bias(h_n, b_hn))
        h = (1 - z) * n + z * carry.astype(n.dtype)
        return h, h


# --------------------------------------------------------------------------------------------
# Running a cell over time.


def _time_mask(layer: Layer, x: Array, time_axis: int, lengths: Any, mask: Any) -> Array | None:
    """``(T, *batch)`` bools: ``lengths: (*batch,)`` and/or ``mask`` (shaped like ``x[..., 0]``).

    Both given: a step is real when both say so.
    """
    if lengths is None and mask is None:
        return None
    steps = x.shape[time_axis]
    batch = x.shape[:time_axis] + x.shape[time_axis + 1 : -1]
    valid = None
    if lengths is not None:
        note = f"(the batch shape of input {x.shape})"
        lengths = layer.side_array("lengths", lengths, batch, note)
        layer.check_range("side input 'lengths'", lengths, 0, steps, closed=True)
        valid = jnp.moveaxis(sequence_mask(lengths, steps), -1, 0)
    if mask is not None:
        note = f"(input shape {x.shape} without features)"
        mask = jnp.moveaxis(layer.side_array("mask", mask, x.shape[:-1], note), time_axis, 0)
        valid = mask if valid is None else valid & mask
    return valid


def _where(m: Array, new: Any, old: Any) -> Any:
    """``where(m, new, old)`` leaf-wise, ``m: (*batch,)`` broadcast explicitly over features."""
    return jax.tree.map(
        lambda n, o: jnp.where(m.reshape(m.shape + (1,) * (n.ndim - m.ndim)), n, o), new, old
    )


@dataclasses.dataclass(frozen=True)
class RNN(Layer):
    """Run a cell over the time axis with ``jax.lax.scan``.

    Args:
        cell: a :class:`RecurrentCell` (``LSTMCell(128)``, ``GRUCell(64)``, ...).
        return_sequences: output every step's ``y_t`` (``(*batch, T, H)``); ``False`` outputs
            only the last processed real step's (``(*batch, H)``: ``t = length - 1`` forward,
            ``t = 0`` with ``reverse=True``; zeros for a sequence with no real step).
        reverse: scan from the last step to the first (outputs stay in input order).
        time_major: input ``(T, *batch, F)`` instead of ``(*batch, T, F)``.
        unroll: steps unrolled per scan iteration (``jax.lax.scan``'s ``unroll``).
        hoist_input_projection: compute the cell's input projection for all steps before the
            scan (``True``) or inside it, step by step (``False``, the default). The results are
            equal; the speed is not (see the module docstring).

    Side inputs: ``"lengths"`` (``(*batch,)`` ints in ``[0, T]``, value-checked), ``"mask"``
    (``(*batch, T)`` bools, or ``(T, *batch)`` time-major; combined with ``"lengths"`` by *and*)
    and ``"initial_carry"`` (default zeros; shaped like ``cell.initial_carry(batch_shape)``); see
    the module docstring.

    Taps: ``"carry"``, the final carry (after the last real step of each sequence, or the
    initial carry for a sequence with none), at ``<rnn path>/carry``. Editing it changes
    nothing (it is not used after the scan); values inside the scan body (per-step carries,
    gates) are not tapped.

    Input ``(*batch, T, F)`` -> ``(*batch, T, H)`` (``(*batch, H)`` with
    ``return_sequences=False``). Params: ``{"cell": cell params}``.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax.inspect import apply_with_intermediates
    >>> rnn = RNN(LSTMCell(8))
    >>> x = jnp.zeros((2, 5, 3))
    >>> params, state = rnn.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, params)
    {'cell': {'b': (32,), 'w_h': (8, 32), 'w_i': (3, 32)}}
    >>> rnn(params, x, side={"lengths": jnp.array([5, 2])}).shape
    (2, 5, 8)
    >>> y, _, taps = apply_with_intermediates(rnn, params, state, x, capture="*carry")
    >>> h, c = taps["carry"]
    >>> h.shape, c.shape
    ((2, 8), (2, 8))
    """

    cell: RecurrentCell
    _: KW_ONLY
    return_sequences: bool = True
    reverse: bool = False
    time_major: bool = False
    unroll: Size = 1
    hoist_input_projection: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.cell, RecurrentCell):
            raise ConfigError(
                f"RNN: cell must be a RecurrentCell (LSTMCell, GRUCell, SimpleRNNCell, ...), "
                f"given {self.cell!r}"
            )

    def _time_axis(self, x: Any) -> int:
        if isinstance(x, tuple | list):
            raise self.error(
                ShapeError,
                f"input must be one array (*batch, T, F), given a {type(x).__name__} of "
                f"{len(x)}; give lengths, masks and initial carries as side inputs, e.g. "
                "apply(..., side={'lengths': lengths})",
            )
        self.check_rank(x, 2, what="input (*batch, T, F)")
        return 0 if self.time_major else len(x.shape) - 2

    def _step_input(self, x: Any) -> tuple[tuple[int, ...], Any]:
        """The batch shape and a ``ShapeDtypeStruct`` of one step's input."""
        axis = self._time_axis(x)
        batch = tuple(x.shape[:axis]) + tuple(x.shape[axis + 1 : -1])
        return batch, jax.ShapeDtypeStruct((*batch, x.shape[-1]), x.dtype)

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        batch, x_t = self._step_input(x)
        carry = jax.eval_shape(lambda: self.cell.initial_carry(batch, x_t.dtype))
        with nested("cell"):
            params, _ = self.cell.init(key, (carry, x_t))
        return {"cell": params}, {}

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        axis = self._time_axis(x)
        x = jnp.asarray(x)
        batch, x_t = self._step_input(x)
        time_mask = _time_mask(
            self, x, axis, self.side_input(call, "lengths"), self.side_input(call, "mask")
        )
        initial_carry = self.side_input(call, "initial_carry")
        cell_params = self.param(params, "cell")
        with nested("cell"):
            xs = jnp.moveaxis(x, axis, 0)
            if self.hoist_input_projection:
                xs = self.cell.input_projection(cell_params, xs)

            def step(carry: Carry, xs_t: Any) -> tuple[Carry, Array]:
                if not self.hoist_input_projection:
                    xs_t = self.cell.input_projection(cell_params, xs_t)
                return self.cell.step(cell_params, carry, xs_t)

            if initial_carry is None:
                initial_carry = self.cell.initial_carry(batch, jax.tree.leaves(xs)[0].dtype)
            else:
                initial_carry = jax.tree.map(jnp.asarray, initial_carry)
                self.cell.check_carry(initial_carry, x_t, what="side input 'initial_carry'")
            # The scan carries the cell's carry alone, unless the last output is needed and the
            # cell cannot read it from its carry: then the last output rides beside it.
            last = None
            if not self.return_sequences and self.cell.output(initial_carry) is None:
                y_struct = jax.eval_shape(
                    lambda c, xs_0: step(c, xs_0)[1],
                    initial_carry,
                    jax.tree.map(lambda a: a[0], xs),
                )
                last = jnp.zeros(y_struct.shape, y_struct.dtype)

            def body(
                loop: tuple[Carry, Array | None], inputs: tuple[Any, Array | None]
            ) -> tuple[tuple[Carry, Array | None], Array | None]:
                carry, last = loop
                xs_t, m_t = inputs
                new_carry, y = step(carry, xs_t)
                if m_t is not None:
                    new_carry = _where(m_t, new_carry, carry)
                    if last is not None:
                        last = _where(m_t, y, last)
                    y = _where(m_t, y, jnp.zeros_like(y))
                elif last is not None:
                    last = y
                return (new_carry, last), (y if self.return_sequences else None)

            (carry, last), ys = jax.lax.scan(
                body,
                (initial_carry, last),
                (xs, time_mask),
                reverse=self.reverse,
                unroll=self.unroll,
            )
        tap("carry", carry)
        if self.return_sequences:
            return jnp.moveaxis(cast(Array, ys), 0, axis), {}
        if last is None:  # held at padding, the final carry holds the last real step's output
            last = cast(Array, self.cell.output(carry))
            if time_mask is not None:
                last = _where(time_mask.any(axis=0), last, jnp.zeros_like(last))
        return last, {}


_MERGES = ("concat", "sum")


def _child_side(owner: Layer, scope: Scope, names: tuple[str, ...]) -> dict[str, Any]:
    """Each child's side inputs: the owner's, with ``"initial_carry"`` its own entry (or none).

    ``"initial_carry"``, when given, must be a dict keyed by (some of) the child ``names``.
    """
    carries = scope.side_input("initial_carry")
    if carries is not None and (not isinstance(carries, Mapping) or not set(carries) <= set(names)):
        given = sorted(carries) if isinstance(carries, Mapping) else type(carries).__name__
        raise owner.error(
            ConfigError,
            f"side input 'initial_carry' must be a dict of initial carries keyed by child name "
            f"(some of {list(names)}), one per recurrent layer; given {given}",
        )
    rest = {k: v for k, v in scope.side.items() if k != "initial_carry"}
    return {
        name: rest
        if carries is None or name not in carries
        else {**rest, "initial_carry": carries[name]}
        for name in names
    }


@dataclasses.dataclass(frozen=True)
class Bidirectional(Block):
    """Run an :class:`RNN` forward and a copy of it backward over time; merge the outputs.

    Args:
        layer: the forward-direction :class:`RNN`.
        backward: the backward-direction :class:`RNN` (default ``layer`` with ``reverse``
            flipped; its ``return_sequences`` and ``time_major`` must equal ``layer``'s).
        merge: ``"concat"`` (features ``2H``) or ``"sum"`` (``H``).

    Side inputs: ``"lengths"`` and ``"mask"`` reach both directions (as for :class:`RNN`); the
    backward direction starts at each sequence's last real step. ``"initial_carry"`` is a dict
    ``{"forward": carry, "backward": carry}`` (either may be left out: zeros).

    With ``return_sequences=False`` the merged outputs are the forward direction's at
    ``t = length - 1`` and the backward one's at ``t = 0``. The final carries are the taps
    ``forward/carry`` and ``backward/carry``.

    Params: ``{"forward": ..., "backward": ...}``.
    """

    layer: RNN
    _: KW_ONLY
    backward: RNN | None = None
    merge: str = "concat"

    def __post_init__(self) -> None:
        if not isinstance(self.layer, RNN) or not isinstance(self.backward, RNN | None):
            raise ConfigError(
                f"Bidirectional: layer and backward must be RNN layers, given {self.layer!r} "
                f"and {self.backward!r}"
            )
        if self.merge not in _MERGES:
            raise ConfigError(
                f"Bidirectional: merge must be one of {_MERGES}, given {self.merge!r}"
            )
        if self.backward is None:
            object.__setattr__(
                self, "backward", dataclasses.replace(self.layer, reverse=not self.layer.reverse)
            )
        for option in ("return_sequences", "time_major"):
            if getattr(self.layer, option) != getattr(self.backward, option):
                raise ConfigError(
                    f"Bidirectional: {option} differs between the forward layer "
                    f"({getattr(self.layer, option)}) and the backward one "
                    f"({getattr(self.backward, option)})"
                )

    @property
    def return_sequences(self) -> bool:
        """Whether the output has a time axis."""
        return self.layer.return_sequences

    def forward(self, scope: Scope, x: Any) -> Any:
        side = _child_side(self, scope, ("forward", "backward"))
        fwd = scope("forward", self.layer, x, side=side["forward"])
        bwd = scope("backward", cast(RNN, self.backward), x, side=side["backward"])
        return jnp.concatenate([fwd, bwd], axis=-1) if self.merge == "concat" else fwd + bwd


@dataclasses.dataclass(frozen=True)
class StackedRNN(Block):
    """Recurrent layers one on top of the other, with optional dropout between them.

    Args:
        layers: a tuple of :class:`RNN` or :class:`Bidirectional` layers; every layer but the
            last must have ``return_sequences=True``. The output is the last layer's.
        dropout_rate: dropout on each intermediate sequence (training only; as PyTorch's
            ``nn.LSTM(dropout=...)``).

    Side inputs: ``"lengths"`` and ``"mask"`` reach every layer. ``"initial_carry"`` is a dict
    keyed by layer name, ``{"0": carry, "1": ...}`` (a :class:`Bidirectional` layer's entry is
    its own ``{"forward": ..., "backward": ...}``); a layer without an entry starts from zeros.

    The final carries are the taps ``"<i>/carry"`` (``"<i>/forward/carry"``, ...).

    Params: ``{"0": ..., "1": ..., ...}``, one entry per layer.

    PyTorch's ``nn.LSTM(F, H, num_layers=L, bidirectional=True, batch_first=True,
    dropout=p)`` with ``(h0, c0)`` and packed sequences is
    ``StackedRNN((Bidirectional(RNN(LSTMCell(H))),) * L, dropout_rate=p)`` applied with
    ``side={"lengths": lengths, "initial_carry": carries}`` (``batch_first=False`` is
    ``RNN(..., time_major=True)``). ``h0``/``c0`` and ``h_n``/``c_n`` are
    ``(L * 2, B, H)`` with row ``l * 2 + d`` for layer ``l``, direction ``d``
    (0 forward, 1 backward), so ``carries = {str(l): {"forward": (h0[2 * l], c0[2 * l]),
    "backward": (h0[2 * l + 1], c0[2 * l + 1])} for l in range(L)}``, and ``h_n[2 * l + d]``,
    ``c_n[2 * l + d]`` are the tap ``f"{l}/{('forward', 'backward')[d]}/carry"`` (a pair
    ``(h, c)``), read with :func:`nn_jax.inspect.apply_with_intermediates` (``capture="*carry"``).
    The output ``(B, T, 2H)`` is ``pad_packed_sequence``'s: zero at padded steps, and the
    backward direction starts from its ``h0`` at each sequence's last real step. ``nn.GRU`` is
    the same with ``GRUCell(H)`` and carries ``h0[2 * l + d]`` alone. Weights map per layer and
    direction (suffix ``_l{l}``, ``_l{l}_reverse``) as :class:`LSTMCell` and :class:`GRUCell`
    say; :mod:`nn_jax.compat.torch` does all of this (``from_torch`` for the weights,
    ``initial_carry_from_torch`` and ``final_carry_to_torch`` for the states). Not expressible:
    ``proj_size`` (LSTM projections); ``bias=False`` is zero ``b`` (and ``b_hn``) left trainable.

    >>> import jax, jax.numpy as jnp
    >>> stack = StackedRNN((RNN(GRUCell(8)), RNN(GRUCell(4), return_sequences=False)))
    >>> params, _ = stack.init(jax.random.key(0), jnp.zeros((2, 5, 3)))
    >>> stack(params, jnp.zeros((2, 5, 3)), side={"initial_carry": {"1": jnp.ones((2, 4))}}).shape
    (2, 4)
    """

    layers: tuple[RNN | Bidirectional, ...]
    _: KW_ONLY
    dropout_rate: Rate = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers or not all(isinstance(l, RNN | Bidirectional) for l in self.layers):
            raise ConfigError(
                f"StackedRNN: layers must be a non-empty tuple of RNN or Bidirectional layers, "
                f"given {self.layers!r}"
            )
        for i, layer in enumerate(self.layers[:-1]):
            if not layer.return_sequences:
                raise ConfigError(
                    f"StackedRNN: layer {i} must return sequences (return_sequences=True) to "
                    "feed the next layer"
                )

    def forward(self, scope: Scope, x: Any) -> Any:
        names = tuple(str(i) for i in range(len(self.layers)))
        side = _child_side(self, scope, names)
        for i, (name, layer) in enumerate(zip(names, self.layers, strict=True)):
            x = scope(name, layer, x, side=side[name])
            if i < len(self.layers) - 1 and self.dropout_rate > 0:
                x = scope(f"dropout_{i}", Dropout(self.dropout_rate), x)
        return x
