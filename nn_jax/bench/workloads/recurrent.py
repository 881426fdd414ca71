"""Recurrent workload: an LSTM sequence classifier.

``lstm``: ``RNNClassifier(10, cell="lstm", hidden=128)`` - one LSTM layer (hidden 128) over
``(B, T, F) = (64, 40, 32)`` float sequences, the last step's ``h`` into ``Dense(10)``; softmax
cross-entropy, ``adam(1e-3)``, batch 64.

Gates are ``[i | f | g | o]`` blocks of nn_jax's fused ``w_i: (F, 4H)``, ``w_h: (H, 4H)``,
``b: (4H,)``; each framework's weights are cut from those explicitly (Haiku's LSTM uses the
order ``i, g, f, o`` on ``[x, h]`` and adds 1 to the forget gate itself, so its bias is
``b_f - 1``).

The raw-JAX step is the same algorithm as nn_jax's ``RNN`` default: the input projection
``x_t @ w_i + b`` inside the scan, step by step, like every framework's LSTM cell here (on
XLA:CPU that beat hoisting it out of the loop: see ``benchmarks/lstm_study.py``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nn_jax.bench import frameworks as fw
from nn_jax.bench.registry import Impl, Reference, Workload, register
from nn_jax.models.rnn import RNNClassifier

HIDDEN, FEATURES, STEPS, CLASSES, LR = 128, 32, 40, 10, 1e-3


def _lstm_setup(batch_size: int, dtype: str, key: jax.Array) -> Reference:
    kx, ky, kp = jax.random.split(key, 3)
    x = jax.random.normal(kx, (batch_size, STEPS, FEATURES)).astype(dtype)
    y = jax.random.randint(ky, (batch_size,), 0, CLASSES)
    model = RNNClassifier(CLASSES, cell="lstm", hidden=HIDDEN)
    return fw.make_reference(model, (x, y), kp, dtype, lr=LR)


def weights(ref: Reference) -> dict[str, jax.Array]:
    """``w_i (F, 4H)``, ``w_h (H, 4H)``, ``b (4H,)`` and the head's ``w_o (H, C)``, ``b_o``."""
    rnn, head = ref.params["rnn"], ref.params["head"]
    cell = {name: fw.leaf(rnn, name) for name in ("w_i", "w_h", "b")}
    return cell | {"w_o": fw.leaf(head, "w"), "b_o": fw.leaf(head, "b")}


def _gates(a: jax.Array) -> dict[str, jax.Array]:
    """The ``i, f, g, o`` blocks of a fused ``(..., 4H)`` array."""
    return dict(zip("ifgo", jnp.split(a, 4, axis=-1), strict=True))


def _cell(h: jax.Array, c: jax.Array, i: Any, f: Any, g: Any, o: Any) -> tuple[Any, Any]:
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


HOISTS = ("gates", "fused", "none")


def _scan_body(p: dict[str, jax.Array], hoist: str) -> Any:
    """The scan body ``((h, c), x_t) -> ((h, c), None)`` for ``hoist`` (see
    :func:`lstm_last_hidden`)."""
    w_h, b = p["w_h"], p["b"]

    def gates(xw_t: jax.Array, h: jax.Array) -> list[jax.Array]:
        return jnp.split(xw_t + h @ w_h, 4, axis=-1)

    def split_gates(carry: Any, xw_t: Any) -> tuple[Any, None]:
        h, c = carry
        hw = jnp.split(h @ w_h, 4, axis=-1)
        return _cell(h, c, *(a + r for a, r in zip(xw_t, hw, strict=True))), None

    def fused(carry: Any, xw_t: Any) -> tuple[Any, None]:
        h, c = carry
        return _cell(h, c, *gates(xw_t, h)), None

    def inside(carry: Any, x_t: Any) -> tuple[Any, None]:
        h, c = carry
        return _cell(h, c, *gates(x_t @ p["w_i"] + b[None, :], h)), None

    return {"gates": split_gates, "fused": fused, "none": inside}[hoist]


def lstm_last_hidden(
    p: dict[str, jax.Array], x: jax.Array, *, hoist: str = "none", unroll: int = 1
) -> jax.Array:
    """Raw-JAX LSTM over ``x: (B, T, F)``; returns the last ``h: (B, H)``.

    ``hoist``: ``"none"`` - the projection inside the loop, per step (nn_jax's default, and what
    Flax, Equinox and Haiku cells do); ``"gates"`` - one input-projection matmul over all steps
    before the scan, handed to it as four ``(T, B, H)`` arrays; ``"fused"`` - the same
    projection as one ``(T, B, 4H)`` array, split into gates inside the loop (nn_jax's
    ``RNN(hoist_input_projection=True)``). ``unroll``: ``jax.lax.scan``'s unroll factor.
    """
    if hoist not in HOISTS:
        raise ValueError(f"hoist must be one of {HOISTS}, given {hoist!r}")
    xs: Any = jnp.swapaxes(x, 0, 1)  # (T, B, F)
    zeros = jnp.zeros((x.shape[0], p["w_h"].shape[0]), x.dtype)
    if hoist != "none":
        xs = xs @ p["w_i"] + p["b"][None, None, :]
    if hoist == "gates":
        xs = tuple(jnp.split(xs, 4, axis=-1))
    (h, _), _ = jax.lax.scan(_scan_body(p, hoist), (zeros, zeros), xs, unroll=unroll)
    return h


def lstm_jax_impl(ref: Reference, *, hoist: str = "none", unroll: int = 1) -> Impl:
    """The raw-JAX step (``hoist``/``unroll`` as in :func:`lstm_last_hidden`)."""

    def loss_fn(p: dict[str, jax.Array], batch: Any) -> jax.Array:
        x, labels = batch
        h = lstm_last_hidden(p, x, hoist=hoist, unroll=unroll)
        return fw.cross_entropy(h @ p["w_o"] + p["b_o"][None, :], labels)

    return fw.functional_impl(loss_fn, weights(ref), ref)


def _lstm_linen(ref: Reference) -> Impl:
    import flax.linen as nn

    class LSTMLinen(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            cell = nn.OptimizedLSTMCell(HIDDEN, name="cell")
            zeros = jnp.zeros((x.shape[0], HIDDEN), x.dtype)  # the carry in the input's dtype
            (_, h), _ = nn.RNN(cell, return_carry=True)(x, initial_carry=(zeros, zeros))
            return nn.Dense(CLASSES, name="head")(h)

    # Linen's LSTMCell/OptimizedLSTMCell params: "i*" (input, no bias) and "h*" per gate.
    p = weights(ref)
    wi, wh, b = _gates(p["w_i"]), _gates(p["w_h"]), _gates(p["b"])
    cell: dict[str, Any] = {}
    for gate in "ifgo":
        cell[f"i{gate}"] = {"kernel": wi[gate]}
        cell[f"h{gate}"] = {"kernel": wh[gate], "bias": b[gate]}
    params = {"cell": cell, "head": {"kernel": p["w_o"], "bias": p["b_o"]}}
    return fw.linen_impl(LSTMLinen(), params, ref)


def _lstm_nnx_model(ref: Reference) -> Any:
    from flax import nnx

    p = weights(ref)

    class LSTMNNX(nnx.Module):
        def __init__(self) -> None:
            cell = nnx.OptimizedLSTMCell(FEATURES, HIDDEN, rngs=nnx.Rngs(0))
            fw.nnx_set(cell.dense_i, kernel=p["w_i"])
            fw.nnx_set(cell.dense_h, kernel=p["w_h"], bias=p["b"])
            self.rnn = nnx.RNN(cell, return_carry=True)
            self.head = fw.nnx_linear(p["w_o"], p["b_o"])

        def __call__(self, x: jax.Array) -> jax.Array:
            zeros = jnp.zeros((x.shape[0], HIDDEN), x.dtype)  # the carry in the input's dtype
            (_, h), _ = self.rnn(x, initial_carry=(zeros, zeros))
            return self.head(h)

    return LSTMNNX()


def _lstm_equinox(ref: Reference) -> Impl:
    import equinox as eqx

    p = weights(ref)

    class LSTMEqx(eqx.Module):
        cell: eqx.nn.LSTMCell
        head: eqx.nn.Linear

        def __call__(self, x: jax.Array) -> jax.Array:  # one sequence (T, F)
            zeros = jnp.zeros((HIDDEN,), x.dtype)
            (h, _), _ = jax.lax.scan(
                lambda carry, x_t: (self.cell(x_t, carry), None), (zeros, zeros), x
            )
            return self.head(h)

    cell = eqx.nn.LSTMCell(FEATURES, HIDDEN, key=jax.random.key(0), dtype=p["w_i"].dtype)
    cell = eqx.tree_at(
        lambda c: (c.weight_ih, c.weight_hh, c.bias), cell, (p["w_i"].T, p["w_h"].T, p["b"])
    )
    return fw.equinox_impl(LSTMEqx(cell, fw.eqx_linear(p["w_o"], p["b_o"])), ref)


def _lstm_haiku(ref: Reference) -> Impl:
    import haiku as hk

    def forward(x: jax.Array) -> jax.Array:
        core = hk.LSTM(HIDDEN)
        zeros = jnp.zeros((x.shape[0], HIDDEN), x.dtype)  # the carry in the input's dtype
        initial = hk.LSTMState(hidden=zeros, cell=zeros)
        _, state = hk.dynamic_unroll(core, x, initial, time_major=False)
        return hk.Linear(CLASSES, name="head")(state.hidden)

    p = weights(ref)
    wi, wh, b = _gates(p["w_i"]), _gates(p["w_h"]), _gates(p["b"])
    order = "igfo"  # Haiku's gate order; it adds 1 to the forget gate's pre-activation
    w = jnp.concatenate(
        [
            jnp.concatenate([wi[g] for g in order], axis=1),
            jnp.concatenate([wh[g] for g in order], axis=1),
        ],
        axis=0,
    )
    bias = jnp.concatenate([b[g] - (1 if g == "f" else 0) for g in order]).astype(p["b"].dtype)
    named = {"lstm/linear": {"w": w, "b": bias}, "head": {"w": p["w_o"], "b": p["b_o"]}}
    return fw.haiku_impl(forward, named, ref)


def _lstm_torch(ref: Reference) -> Impl:
    import torch

    p = weights(ref)

    class LSTMTorch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(FEATURES, HIDDEN, batch_first=True)
            self.head = fw.torch_linear(p["w_o"], p["b_o"])
            with torch.no_grad():
                self.lstm.weight_ih_l0.copy_(fw.to_torch(p["w_i"].T))
                self.lstm.weight_hh_l0.copy_(fw.to_torch(p["w_h"].T))
                self.lstm.bias_ih_l0.copy_(fw.to_torch(p["b"]))
                self.lstm.bias_hh_l0.zero_()
            # One bias vector, as everywhere else (Adam would move two copies twice as fast).
            self.lstm.bias_hh_l0.requires_grad_(False)

        def forward(self, x: Any) -> Any:
            _, (h, _) = self.lstm(x)
            return self.head(h[0])

    return fw.torch_impl(LSTMTorch(), ref)


def _lstm_flops(ref: Reference) -> float:
    """Matmul FLOPs of a training step: per step ``x_t W_i`` and ``h W_h`` forward; backward
    the weight gradients of both and the ``h`` gradient (not the input's); plus the head."""
    n, t = ref.batch_size, STEPS
    gates = 4 * HIDDEN
    x_proj = 2 * n * t * FEATURES * gates
    h_proj = 2 * n * t * HIDDEN * gates
    head = 2 * n * HIDDEN * CLASSES
    return 2 * x_proj + 3 * h_proj + 3 * head


register(
    Workload(
        "lstm",
        "LSTM (hidden 128) over 40 steps of 32 features, last h -> Dense(10), adam(1e-3)",
        64,
        _lstm_setup,
        {
            "nn_jax": fw.nn_jax_builder,
            "jax": lstm_jax_impl,
            "flax_linen": _lstm_linen,
            **fw.nnx_builders(_lstm_nnx_model),
            "equinox": _lstm_equinox,
            "haiku": _lstm_haiku,
            "torch": _lstm_torch,
        },
        analytic_flops=_lstm_flops,
    )
)

__all__ = ["HOISTS", "lstm_jax_impl", "lstm_last_hidden", "weights"]
