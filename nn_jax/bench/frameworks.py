"""The framework glue every workload shares, written once.

* the references: :func:`make_reference` (an nn_jax model, its params cast to the dtype, the
  batch, Adam or SGD);
* hand-written losses (what a raw-JAX user writes; the other JAX frameworks use them too) and
  :func:`loss_of`, the ``loss_fn(model_or_params, batch)`` closure of a forward function;
* each framework's idiomatic training step: :func:`functional_impl` (``jax.jit`` +
  ``jax.value_and_grad`` + optax: raw JAX, Flax Linen, Haiku), :func:`nn_jax_builder`,
  :func:`equinox_impl` (:func:`equinox_stateful_impl` with batch norm), :func:`nnx_builders`
  (``nnx.jit`` and ``nnx.split``/``merge``), :func:`torch_impl`;
* moving nn_jax parameters into other frameworks: :func:`rename`, :func:`leaf`,
  :func:`haiku_params` and one dense-layer constructor per framework (:func:`eqx_linear`,
  :func:`nnx_linear`, :func:`torch_linear`).

A workload module then holds only its models. Framework packages are imported inside the
functions that need them, so importing this module needs only JAX and optax.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nn_jax import losses
from nn_jax.bench.registry import Builder, Impl, Reference

LossFn = Callable[[Any, Any], jax.Array]
Predict = Callable[[Any, Any], Any]


# --------------------------------------------------------------------------------------------
# References.


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Cast every floating-point array leaf of ``tree`` to ``dtype`` (others unchanged)."""
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a,
        tree,
    )


def _float32_example(tree: Any) -> Any:
    """Shape structs of ``tree``'s arrays, floating ones as float32 (nn_jax inits in float32)."""

    def struct(a: Any) -> jax.ShapeDtypeStruct:
        floating = jnp.issubdtype(a.dtype, jnp.floating)
        return jax.ShapeDtypeStruct(a.shape, jnp.float32 if floating else a.dtype)

    return jax.tree.map(struct, tree)


def make_reference(
    model: Any,
    batch: tuple[Any, Any],
    key: jax.Array,
    dtype: str,
    *,
    lr: float,
    loss: str = "ce",
    optimizer: str = "adam",
    **config: Any,
) -> Reference:
    """The :class:`Reference` of ``model`` on ``batch``: params initialized in float32 from
    ``key`` and cast to ``dtype``; the loss ``"ce"`` (softmax cross-entropy with integer
    labels), ``"bce"`` (binary cross-entropy on probabilities) or ``"mse"`` (mean squared
    error); the optimizer ``"adam"`` (``optax.adam(lr)``) or ``"sgd"`` (``optax.sgd(lr)``)."""
    params, state = model.init(key, _float32_example(batch[0]))
    nn_losses: dict[str, LossFn] = {
        "ce": losses.softmax_cross_entropy_with_integer_labels,
        "bce": losses.binary_cross_entropy,
        "mse": losses.mse,
    }
    tx = {"adam": optax.adam, "sgd": optax.sgd}[optimizer](lr)
    return Reference(
        model,
        cast_floating(params, dtype),
        cast_floating(state, dtype),
        batch,
        nn_losses[loss],
        tx,
        dtype,
        len(jax.tree.leaves(batch[1])[0]),
        {"lr": lr, "loss": loss, "optimizer": optimizer, **config},
    )


# --------------------------------------------------------------------------------------------
# Hand-written losses.


def bce(probs: jax.Array, targets: jax.Array) -> jax.Array:
    """PyTorch's ``BCELoss``: mean of ``-(t log p + (1 - t) log(1 - p))``, logs clamped at -100."""
    log_p = jnp.maximum(jnp.log(probs), -100.0)
    log_1mp = jnp.maximum(jnp.log1p(-probs), -100.0)
    return -jnp.mean(targets * log_p + (1 - targets) * log_1mp)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels: ``mean(logsumexp(z) - z[label])``.

    ``logits: (..., C)``, ``labels: (...)``; the mean is over every position.
    """
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[..., None], axis=-1))


def mse(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error: ``mean((predictions - targets)^2)`` over every element."""
    return jnp.mean(jnp.square(predictions - targets))


def hand_loss(ref: Reference) -> LossFn:
    """The hand-written loss ``loss(predictions, targets)`` of the reference's ``"loss"``."""
    return {"ce": cross_entropy, "bce": bce, "mse": mse}[ref.config["loss"]]


def loss_of(ref: Reference, predict: Predict) -> LossFn:
    """``loss_fn(model_or_params, (inputs, targets))``: the reference's hand-written loss of
    ``predict(model_or_params, inputs)``."""
    loss = hand_loss(ref)

    def loss_fn(model_or_params: Any, batch: Any) -> jax.Array:
        inputs, targets = batch
        return loss(predict(model_or_params, inputs), targets)

    return loss_fn


def call(model: Any, inputs: Any) -> Any:
    """``model(inputs)``: the forward pass of a module object (NNX, PyTorch, ...)."""
    return model(inputs)


def vmap_call(model: Any, inputs: Any) -> Any:
    """``jax.vmap(model)(inputs)``: a per-example module (Equinox) over a batch."""
    return jax.vmap(model)(inputs)


# --------------------------------------------------------------------------------------------
# JAX training steps.


def functional_step(
    loss_fn: LossFn, optimizer: optax.GradientTransformation
) -> Callable[[Any, Any, Any], tuple[Any, Any, jax.Array]]:
    """The textbook jitted step ``(params, opt_state, batch) -> (params, opt_state, loss)``.

    What raw JAX, Flax Linen and Haiku users write: ``jax.value_and_grad`` of
    ``loss_fn(params, batch)``, then an optax update.
    """

    @jax.jit
    def step(params: Any, opt_state: Any, batch: Any) -> tuple[Any, Any, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def stateful_functional_impl(
    loss_fn: Callable[[Any, Any, Any], tuple[jax.Array, Any]],
    params: Any,
    state: Any,
    ref: Reference,
    batch: Any = None,
) -> Impl:
    """As :func:`functional_impl` with layer state (batch-norm statistics) threaded through.

    ``loss_fn(params, state, batch) -> (loss, new_state)``; the step is
    ``(params, state, opt_state, batch) -> (params, state, opt_state, loss)``.
    """
    optimizer = ref.optimizer

    @jax.jit
    def step(
        params: Any, state: Any, opt_state: Any, batch: Any
    ) -> tuple[Any, Any, Any, jax.Array]:
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss

    return Impl(
        step, (params, state, optimizer.init(params)), ref.batch if batch is None else batch
    )


def functional_impl(loss_fn: LossFn, params: Any, ref: Reference) -> Impl:
    """An :class:`Impl` of :func:`functional_step` from ``params``, the reference's optimizer."""
    return Impl(
        functional_step(loss_fn, ref.optimizer), (params, ref.optimizer.init(params)), ref.batch
    )


def nn_jax_builder(ref: Reference, *, flat: bool = True) -> Impl:
    """nn_jax's own step as ``fit`` dispatches it: ``make_train_step`` (:func:`nn_jax_stateful_impl`
    if state) through :func:`nn_jax.dispatch.flatten_step`, the carry a flat list of arrays
    between calls (``flat=False``: the nested pytrees at every call, :func:`nn_jax_pytree_builder`).

    The stateful step runs with ``Monitor(grad_norm=False, on_nonfinite="ignore")``: the work
    of ``make_train_step`` and of every other framework's step, without the gradient norm and
    the skip of non-finite steps; ``benchmarks/monitor_cost.py`` measures what the default
    monitoring and the nested carry cost.
    """
    from nn_jax.monitor import Monitor
    from nn_jax.train import make_train_step

    if ref.state:
        return nn_jax_stateful_impl(ref, Monitor(grad_norm=False, on_nonfinite="ignore"), flat=flat)
    step = make_train_step(ref.model, ref.loss, ref.optimizer)
    return _nn_jax_impl(step, (ref.params, ref.optimizer.init(ref.params)), ref.batch, flat=flat)


def nn_jax_pytree_builder(ref: Reference) -> Impl:
    """:func:`nn_jax_builder` with the nested params, state and optimizer state passed to the
    jitted step at every call (what ``step(ts, batch)`` in a hand-written loop costs)."""
    return nn_jax_builder(ref, flat=False)


def nn_jax_stateful_impl(ref: Reference, monitor: Any = None, *, flat: bool = True) -> Impl:
    """``make_stateful_train_step`` with ``monitor`` (default: ``Monitor()``) on a
    ``TrainState`` of the reference's params and state (``flat``: as in :func:`nn_jax_builder`)."""
    from nn_jax.train import TrainState, make_stateful_train_step

    step = make_stateful_train_step(ref.model, ref.loss, ref.optimizer, monitor=monitor)
    ts = TrainState(
        ref.params,
        ref.state,
        ref.optimizer.init(ref.params),
        jax.random.key(0),
        jnp.zeros((), "int32"),
    )
    return _nn_jax_impl(step, (ts,), ref.batch, flat, to_float=lambda logs: float(logs["loss"]))


def _nn_jax_impl(
    step: Callable[..., Any],
    carry: tuple[Any, ...],
    batch: Any,
    flat: bool,
    to_float: Callable[[Any], float] = float,
) -> Impl:
    if not flat:
        return Impl(step, carry, batch, to_float=to_float)
    from nn_jax.dispatch import flatten_step

    flat_step, leaves, _ = flatten_step(step, *carry)
    return Impl(flat_step, (leaves,), batch, to_float=to_float)


def equinox_impl(
    model: Any, ref: Reference, batch: Any = None, predict: Predict = vmap_call
) -> Impl:
    """Equinox's idiomatic step: ``eqx.filter_jit`` + ``eqx.filter_value_and_grad`` + optax.

    ``model`` is a per-example module, vmapped over the batch (default ``ref.batch``) unless
    ``predict`` says otherwise.
    """
    import equinox as eqx

    optimizer, loss_fn = ref.optimizer, loss_of(ref, predict)

    @eqx.filter_jit
    def step(model: Any, opt_state: Any, batch: Any) -> tuple[Any, Any, jax.Array]:
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, batch)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))
    return Impl(step, (model, opt_state), ref.batch if batch is None else batch, traceable=False)


def equinox_stateful_impl(model: Any, state: Any, ref: Reference, batch: Any = None) -> Impl:
    """:func:`equinox_impl` for a model with ``eqx.nn.State`` (batch norm): the per-example
    ``model(x, state) -> (y, state)`` is vmapped with ``axis_name="batch"`` (the axis its batch
    norms name) and the state threaded through the step."""
    import equinox as eqx

    optimizer, criterion = ref.optimizer, hand_loss(ref)

    def loss_fn(model: Any, state: Any, batch: Any) -> tuple[jax.Array, Any]:
        x, targets = batch
        batched = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))
        predictions, state = batched(x, state)
        return criterion(predictions, targets), state

    @eqx.filter_jit
    def step(model: Any, state: Any, opt_state: Any, batch: Any) -> tuple[Any, Any, Any, jax.Array]:
        (loss, state), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, state, batch)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state, opt_state, loss

    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))
    carry = (model, state, opt_state)
    return Impl(step, carry, ref.batch if batch is None else batch, traceable=False)


def _nnx_jit_impl(model: Any, ref: Reference) -> Impl:
    """Flax NNX's documented step: ``nnx.jit`` over ``(model, optimizer)``, updated in place."""
    from flax import nnx

    optimizer, loss_fn = nnx.Optimizer(model, ref.optimizer, wrt=nnx.Param), loss_of(ref, call)

    @nnx.jit
    def step(model: Any, optimizer: Any, batch: Any) -> jax.Array:
        loss, grads = nnx.value_and_grad(loss_fn)(model, batch)
        optimizer.update(model, grads)
        return loss

    return Impl(step, (model, optimizer), ref.batch, inplace=True, traceable=False)


def _nnx_split_impl(model: Any, ref: Reference) -> Impl:
    """Flax NNX's functional style: ``nnx.split`` once, ``jax.jit`` a merge-step-split function."""
    from flax import nnx

    optimizer, loss_fn = nnx.Optimizer(model, ref.optimizer, wrt=nnx.Param), loss_of(ref, call)
    graphdef, state = nnx.split((model, optimizer))

    @jax.jit
    def step(state: Any, batch: Any) -> tuple[Any, jax.Array]:
        model, optimizer = nnx.merge(graphdef, state)
        loss, grads = nnx.value_and_grad(loss_fn)(model, batch)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    return Impl(step, (state,), ref.batch)


def nnx_builders(make_model: Callable[[Reference], Any]) -> dict[str, Builder]:
    """The ``flax_nnx`` (``nnx.jit``) and ``flax_nnx_split`` builders of one NNX model."""
    return {
        "flax_nnx": lambda ref: _nnx_jit_impl(make_model(ref), ref),
        "flax_nnx_split": lambda ref: _nnx_split_impl(make_model(ref), ref),
    }


def linen_impl(module: Any, params: Any, ref: Reference) -> Impl:
    """A Flax Linen module's step: ``module.apply({"params": params}, inputs)`` under
    :func:`functional_impl`."""
    return functional_impl(loss_of(ref, module.apply), {"params": params}, ref)


def haiku_impl(forward: Callable[..., Any], named: Mapping[str, Any], ref: Reference) -> Impl:
    """A Haiku ``forward(inputs)``'s step, with params taken from ``named`` (see
    :func:`haiku_params`)."""
    import haiku as hk

    model: Any = hk.without_apply_rng(hk.transform(forward))
    template = jax.eval_shape(model.init, jax.random.key(0), ref.batch[0])
    return functional_impl(loss_of(ref, model.apply), haiku_params(template, named), ref)


# --------------------------------------------------------------------------------------------
# PyTorch.


def torch_norm(layer: Any, q: Any) -> Any:
    """A torch norm ``layer`` given the scale and offset of the nn_jax norm params ``q``."""
    import torch

    scale, offset = norm_params(q)
    with torch.no_grad():
        layer.weight.copy_(to_torch(scale))
        layer.bias.copy_(to_torch(offset))
    return layer


def to_torch(a: Any, device: str = "cpu") -> Any:
    """A JAX array as a torch tensor: same float dtype (bfloat16 via float32), integers as int64."""
    import torch

    if a.dtype == jnp.bfloat16:
        return torch.from_numpy(np.array(a.astype(jnp.float32))).to(device, torch.bfloat16)
    if jnp.issubdtype(a.dtype, jnp.integer):  # class labels: torch losses want int64
        return torch.from_numpy(np.array(a, np.int64)).to(device)
    return torch.from_numpy(np.array(a)).to(device)


def _torch_loss(ref: Reference) -> Callable[[Any, Any], Any]:
    """The PyTorch loss matching :func:`loss_of`'s (``(..., C)`` logits and ``(...)`` labels)."""
    import torch.nn.functional as F

    if ref.config["loss"] == "bce":
        return F.binary_cross_entropy
    if ref.config["loss"] == "mse":
        return F.mse_loss
    return lambda logits, labels: F.cross_entropy(logits.flatten(0, -2), labels.flatten())


def torch_impl(model: Any, ref: Reference, batch: tuple[Any, Any] | None = None) -> Impl:
    """PyTorch eager: ``zero_grad``, forward, ``backward``, ``optimizer.step``.

    ``model`` is a ``torch.nn.Module`` holding the reference weights (cast here to the
    reference's dtype); ``batch`` (JAX arrays; default ``ref.batch``) is converted once. The
    optimizer is ``torch.optim.Adam`` or ``SGD`` (the reference's ``"optimizer"``) with
    ``ref.config["lr"]``.
    """
    import torch

    device = "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"
    model = model.to(device, getattr(torch, ref.dtype))
    torch_optimizer = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[ref.config["optimizer"]]
    optimizer = torch_optimizer(model.parameters(), lr=ref.config["lr"])
    batch = tuple(to_torch(a, device) for a in (ref.batch if batch is None else batch))
    loss_fn = _torch_loss(ref)

    def step(model: Any, optimizer: Any, batch: Any) -> Any:
        optimizer.zero_grad(set_to_none=True)
        inputs, targets = batch
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def sync(_: Any) -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    return Impl(
        step,
        (model, optimizer),
        batch,
        inplace=True,
        traceable=False,
        sync=sync,
        to_float=lambda loss: float(loss.float().item()),
    )


# --------------------------------------------------------------------------------------------
# Moving nn_jax parameters into other frameworks.

FLAX_NAMES = {"w": "kernel", "b": "bias", "table": "embedding"}
"""nn_jax's parameter names -> Flax's (dense and conv kernels, biases, norms' offsets)."""


def rename(tree: Any, names: Mapping[str, str]) -> Any:
    """``tree`` with dict keys renamed by ``names`` at every level (e.g. ``w -> kernel``)."""
    if isinstance(tree, Mapping):
        return {names.get(k, k): rename(v, names) for k, v in tree.items()}
    return tree


def leaf(tree: Any, name: str) -> jax.Array:
    """The one leaf of a layer's params called ``name`` at any depth (``w`` of
    ``{"dense": {"w": ...}}``), so a mapping does not depend on how a layer nests its children.

    Raises ``LookupError`` naming the tree's leaf paths when there is none or more than one.
    """
    found = [
        value
        for path, value in jax.tree_util.tree_leaves_with_path(tree)
        if getattr(path[-1], "key", None) == name
    ]
    if len(found) != 1:
        paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]
        raise LookupError(f"expected one parameter named {name!r} in {paths}, found {len(found)}")
    return found[0]


def norm_params(p: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
    """``(scale, offset)`` of an nn_jax norm layer's params (``scale`` and ``b``)."""
    return p["scale"], p["b"]


def haiku_norm(p: Mapping[str, Any]) -> dict[str, jax.Array]:
    """An nn_jax norm layer's params in Haiku's names: ``{"scale", "offset"}``."""
    scale, offset = norm_params(p)
    return {"scale": scale, "offset": offset}


def haiku_params(template: Mapping[str, Any], named: Mapping[str, Any]) -> dict[str, Any]:
    """Haiku params shaped like ``template`` (``jax.eval_shape`` of ``init``) from ``named``.

    ``named`` maps a module path (``"block_0_attention/query"``) to ``{leaf: array}``; a path
    Haiku nests deeper (``"a/~_linear_projection/query"``) is looked up by its first and last
    components. Raises ``LookupError`` naming a path that ``named`` lacks.
    """
    params = {}
    for path, leaves in template.items():
        parts = path.split("/")
        source = named.get(path, named.get(f"{parts[0]}/{parts[-1]}"))
        if source is None:
            raise LookupError(f"no parameters for Haiku module {path!r}; given {sorted(named)}")
        params[path] = {k: jnp.reshape(source[k], v.shape) for k, v in leaves.items()}
    return params


def eqx_linear(w: jax.Array, b: jax.Array | None = None) -> Any:
    """An ``eqx.nn.Linear`` holding ``w: (in, out)`` (stored transposed) and ``b``."""
    import equinox as eqx

    (n_in, n_out), key = w.shape, jax.random.key(0)
    layer = eqx.nn.Linear(n_in, n_out, use_bias=b is not None, key=key, dtype=w.dtype)
    if b is None:
        return eqx.tree_at(lambda lin: lin.weight, layer, w.T)
    return eqx.tree_at(lambda lin: (lin.weight, lin.bias), layer, (w.T, b))


def nnx_linear(w: jax.Array, b: jax.Array | None = None) -> Any:
    """An ``nnx.Linear`` holding ``w: (in, out)`` and ``b``."""
    from flax import nnx

    (n_in, n_out), rngs = w.shape, nnx.Rngs(0)
    layer = nnx.Linear(n_in, n_out, use_bias=b is not None, param_dtype=w.dtype, rngs=rngs)
    return nnx_set(layer, kernel=w) if b is None else nnx_set(layer, kernel=w, bias=b)


def nnx_set(module: Any, **values: jax.Array) -> Any:
    """``module`` with its NNX variables set: ``nnx_set(linear, kernel=w, bias=b)``."""
    for name, value in values.items():
        getattr(module, name).set_value(value)
    return module


def torch_linear(w: jax.Array, b: jax.Array | None = None) -> Any:
    """A ``torch.nn.Linear`` holding ``w: (in, out)`` (stored transposed) and ``b``."""
    import torch

    layer = torch.nn.Linear(*w.shape, bias=b is not None)
    with torch.no_grad():
        layer.weight.copy_(to_torch(w.T))
        if b is not None:
            layer.bias.copy_(to_torch(b))
    return layer


__all__ = [
    "FLAX_NAMES",
    "bce",
    "call",
    "cast_floating",
    "cross_entropy",
    "equinox_impl",
    "equinox_stateful_impl",
    "eqx_linear",
    "functional_impl",
    "functional_step",
    "haiku_impl",
    "haiku_norm",
    "haiku_params",
    "hand_loss",
    "leaf",
    "linen_impl",
    "loss_of",
    "make_reference",
    "mse",
    "nn_jax_builder",
    "nn_jax_pytree_builder",
    "nn_jax_stateful_impl",
    "nnx_builders",
    "nnx_linear",
    "nnx_set",
    "norm_params",
    "rename",
    "stateful_functional_impl",
    "to_torch",
    "torch_impl",
    "torch_linear",
    "torch_norm",
    "vmap_call",
]
