"""Activation statistics over a dataset, and drift between two datasets, input to output.

The seed warns that networks need "careful monitoring for overfitting, drift, and failure
modes". :mod:`nn_jax.monitor` watches a training run; this module looks at a *trained* model
and the data it meets:

* :func:`activation_statistics`: per layer and per unit, the mean, standard deviation, range,
  dead-ReLU and saturation counts of every tapped activation over a whole dataset, accumulated
  batch by batch (the dataset's activations are never held at once).
* :func:`drift_report`: reference data (what the model was trained or validated on) against
  new data, per input feature and per layer unit, with the population stability index and the
  two-sample Kolmogorov-Smirnov statistic; a :class:`DriftReport` ranks them, says which drifted
  and summarises each layer, so a shift can be located: which inputs moved, and how far into
  the network the change travels.
* :func:`plot_drift`: the report as figures (matplotlib, imported when a plot is made).

Both are built on :func:`nn_jax.inspect.apply_with_intermediates`: a *layer* here is a tapped
path (``"dense_0"``, ``"activation_0"``, ``"block_1/attention/weights"``) and a *unit* is a
position on the last axis of its value; every other axis after the example axis (image
positions, time steps) gives more samples of the same unit, as in
:func:`nn_jax.monitor.activation_health`. An *input feature* is one position of an input array
after the example axis (a pixel of an image), so a shift can be drawn where it happened.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax.core import Layer, Params, Side, State, check_layer, describe, tapping
from nn_jax.errors import ArgumentError, ConfigError, ShapeError, ValueRangeError
from nn_jax.inspect import apply_with_intermediates
from nn_jax.monitor import ActivationKind as Kind
from nn_jax.monitor import activation_kind, saturated

__all__ = [
    "DriftGroup",
    "DriftReport",
    "UnitStatistics",
    "activation_statistics",
    "drift_report",
    "ks_2samp",
    "plot_drift",
    "population_stability_index",
]

_PSI_EPSILON = 1e-4


# --------------------------------------------------------------------------------------------
# Batching a dataset (shared by activation_statistics and drift_report)
# --------------------------------------------------------------------------------------------


def _check_data(where: str, data: Any, side: Side | None) -> int:
    """The number of examples of ``data`` (and ``side``); errors name ``where``."""
    leaves = jax.tree.leaves(data)
    if not leaves or not all(hasattr(a, "shape") and hasattr(a, "dtype") for a in leaves):
        raise ArgumentError(
            f"{where}: data must be an array or a pytree of arrays with a leading example "
            f"axis, given {describe(data)}"
        )
    sizes = {int(np.shape(a)[0]) if np.ndim(a) else -1 for a in leaves}
    side_leaves = jax.tree.leaves(side) if side is not None else []
    side_sizes = {int(np.shape(a)[0]) if np.ndim(a) else -1 for a in side_leaves}
    if len(sizes) != 1 or -1 in sizes or not side_sizes <= sizes:
        shapes = [tuple(np.shape(a)) for a in leaves + side_leaves]
        raise ShapeError(
            f"{where}: every array of data (and side) must have the same leading example axis, "
            f"given shapes {shapes}"
        )
    (n,) = sizes
    if n == 0:
        raise ShapeError(f"{where}: data has no examples (leading axis of size 0)")
    return n


def _check_batch_size(where: str, batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"{where}: batch_size must be an int >= 1, given {batch_size!r}")
    return batch_size


def _batches(
    data: Any, side: Side | None, n: int, batch_size: int
) -> Iterator[tuple[Any, Side | None, np.ndarray]]:
    """``(x, side, mask)`` batches of exactly ``min(batch_size, n)`` rows.

    The last batch is padded by repeating the last example and ``mask`` marks the real rows, so
    one compiled program serves every batch.
    """
    size = min(batch_size, n)
    for start in range(0, n, size):
        idx = np.arange(start, start + size)
        mask = idx < n
        idx = np.minimum(idx, n - 1)
        yield (
            jax.tree.map(lambda a, i=idx: _rows(a, i), data),
            None if side is None else jax.tree.map(lambda a, i=idx: _rows(a, i), side),
            mask,
        )


def _rows(a: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of ``a``: gathered on the device for a JAX array, on the host otherwise (so
    a NumPy dataset is never copied to the device whole)."""
    return a[idx] if isinstance(a, jax.Array) else np.asarray(a)[idx]


def _tapped(
    where: str,
    model: Layer,
    params: Params,
    state: State,
    x: Any,
    side: Side | None,
    capture: str | Sequence[str],
) -> dict[str, tuple[tuple[int, ...], Kind]]:
    """``{path: (shape, kind)}`` of the tapped float arrays with the batch as leading axis."""

    def run(p: Params, s: State, x: Any, side: Side | None) -> Any:
        return model.apply(p, s, x, side=side)[0]

    with tapping(capture) as taps:  # shapes only: nothing runs
        jax.eval_shape(run, params, state, x, side)
    batch = jax.tree.leaves(x)[0].shape[0]
    found: dict[str, tuple[tuple[int, ...], Kind]] = {}
    for path, value in taps.values.items():
        if (
            hasattr(value, "shape")
            and hasattr(value, "dtype")
            and jnp.issubdtype(value.dtype, jnp.inexact)
            and len(value.shape) >= 1
            and value.shape[0] == batch
        ):
            found[path] = (tuple(value.shape), activation_kind(taps.layers.get(path)))
    if not found:
        raise ConfigError(
            f"{where}: capture={capture!r} matches no tapped float array with the examples on "
            f"its leading axis; the model's layer paths: {list(taps.layers)}"
        )
    return found


def _units(value: jax.Array) -> jax.Array:
    """``(B, ..., U)`` -> ``(B, P, U)``: the positions between examples and units as samples."""
    if value.ndim == 1:
        return value.reshape(value.shape[0], 1, 1)
    return value.reshape(value.shape[0], -1, value.shape[-1])


@functools.partial(jax.jit, static_argnames=("model", "capture", "kinds"))
def _reduce(
    model: Layer,
    capture: tuple[str, ...],
    kinds: tuple[tuple[str, Kind], ...],
    params: Params,
    state: State,
    x: Any,
    side: Side | None,
    mask: jax.Array,
) -> dict[str, dict[str, jax.Array]]:
    """One batch's per-unit sums of each tapped path (``mask``: the real rows)."""
    _, _, values = apply_with_intermediates(model, params, state, x, side=side, capture=capture)
    out = {}
    for path, kind in kinds:
        v = _units(jax.lax.stop_gradient(values[path])).astype(jnp.float32)
        w = jnp.broadcast_to(mask[:, None, None], v.shape)
        count = jnp.sum(w[..., 0])
        mean = jnp.sum(jnp.where(w, v, 0.0), axis=(0, 1)) / count
        out[path] = {
            "count": count,
            "mean": mean,
            "m2": jnp.sum(jnp.where(w, jnp.square(v - mean[None, None, :]), 0.0), axis=(0, 1)),
            "min": jnp.min(jnp.where(w, v, jnp.inf), axis=(0, 1)),
            "max": jnp.max(jnp.where(w, v, -jnp.inf), axis=(0, 1)),
            "positive": jnp.any(w & (v > 0), axis=(0, 1)),
            "saturated": jnp.sum(w & saturated(v, kind), axis=(0, 1)),
        }
    return out


@functools.partial(jax.jit, static_argnames=("model", "capture", "paths"))
def _unit_values(
    model: Layer,
    capture: tuple[str, ...],
    paths: tuple[str, ...],
    params: Params,
    state: State,
    x: Any,
    side: Side | None,
) -> dict[str, jax.Array]:
    """One batch's tapped values at ``paths``, each as ``(B, positions, units)``."""
    _, _, values = apply_with_intermediates(model, params, state, x, side=side, capture=capture)
    return {path: _units(values[path]) for path in paths}


# --------------------------------------------------------------------------------------------
# Activation statistics
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class UnitStatistics:
    """Per-unit statistics of one tapped layer output over a dataset.

    A unit is a position on the value's last axis; its samples are every example and every
    position in between (``count = examples * positions``). ``std`` is the population standard
    deviation (``ddof=0``).

    Attributes:
        path: the tapped path (``"activation_0"``).
        kind: ``"relu"``, ``"tanh"``, ``"sigmoid"`` (decided as in
            :func:`nn_jax.monitor.activation_health`) or ``"other"``.
        shape: the value's shape for one batch, e.g. ``(batch, 64)``.
        count: samples per unit.
        mean, std, min, max: ``(units,)`` float64.
        dead: ``(units,)`` bool, ReLU layers only (else ``None``): the unit is ``<= 0`` on every
            sample of the dataset.
        saturated: ``(units,)`` float64, tanh/sigmoid layers only (else ``None``): the share of
            samples with ``|tanh| > 0.99``, or a sigmoid outside ``[0.01, 0.99]``.
    """

    path: str
    kind: Kind
    shape: tuple[int, ...]
    count: int
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    dead: np.ndarray | None
    saturated: np.ndarray | None

    @property
    def units(self) -> int:
        """The number of units (the size of the last axis)."""
        return int(self.mean.shape[0])

    @property
    def dead_fraction(self) -> float | None:
        """The share of units dead on the whole dataset (ReLU layers; else ``None``)."""
        return None if self.dead is None else float(np.mean(self.dead))

    @property
    def saturation_fraction(self) -> float | None:
        """The share of all outputs that are saturated (tanh/sigmoid layers; else ``None``)."""
        return None if self.saturated is None else float(np.mean(self.saturated))


def activation_statistics(
    model: Layer,
    params: Params,
    state: State,
    data: Any,
    *,
    side: Side | None = None,
    batch_size: int = 256,
    capture: str | Sequence[str] = "*",
) -> dict[str, UnitStatistics]:
    """Per-layer, per-unit statistics of the tapped activations over a whole dataset.

    The model runs in eval mode (``train=False``) on batches of ``batch_size`` examples under
    one ``jax.jit`` (the last, partial batch is padded and its padding masked out, so nothing
    is compiled twice). Each batch is reduced on the device to per-unit sums; the host combines
    them in float64 with the pairwise update of Chan, Golub and LeVeque (1979): for two parts
    with counts :math:`n_a, n_b`, means :math:`\\mu_a, \\mu_b` and sums of squared deviations
    :math:`M_a, M_b`, with :math:`\\delta = \\mu_b - \\mu_a`,

    .. math::
        n = n_a + n_b,\\quad \\mu = \\mu_a + \\delta\\, n_b / n,\\quad
        M = M_a + M_b + \\delta^2 n_a n_b / n,\\quad \\sigma = \\sqrt{M / n}.

    A ReLU unit is *dead* when it is ``<= 0`` on every sample of the dataset (every example and
    position); tanh/sigmoid *saturation* is the share of samples past 0.99 (see
    :func:`nn_jax.monitor.activation_health`, whose rule for which layers are ReLU, tanh or
    sigmoid is used here).

    Args:
        model: a layer instance.
        params, state: its parameters and state.
        data: the inputs, an array ``(N, ...)`` or a pytree of arrays, each with the ``N``
            examples on the leading axis.
        side: side inputs, a pytree of arrays with the same leading axis ``N`` (batched with
            ``data``), or ``None``.
        batch_size: examples per batch (``>= 1``; need not divide ``N``).
        capture: path pattern(s) of the tapped values to describe (``fnmatch`` syntax, as in
            :func:`~nn_jax.inspect.apply_with_intermediates`). Tapped values that are not float
            arrays with the batch on their leading axis are skipped.

    Returns:
        ``{path: UnitStatistics}`` in the order the model taps them.

    Raises:
        ArgumentError: ``model`` is not a layer or ``data`` holds no arrays.
        ShapeError: the arrays of ``data`` and ``side`` have different leading axes.
        ConfigError: bad ``batch_size``, or ``capture`` matches no tapped array.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax import Dense, Sequential, relu
    >>> model = Sequential(Dense(4), relu, Dense(1))
    >>> params, state = model.init(jax.random.key(0), jnp.zeros((2, 3)))
    >>> x = jax.random.normal(jax.random.key(1), (10, 3))
    >>> stats = activation_statistics(model, params, state, x, batch_size=4)
    >>> {path: (s.kind, s.count, s.mean.shape) for path, s in stats.items()}
    {'0': ('other', 10, (4,)), '1': ('relu', 10, (4,)), '2': ('other', 10, (1,))}
    """
    where = "activation_statistics"
    check_layer(where, model)
    n = _check_data(where, data, side)
    batch_size = _check_batch_size(where, batch_size)
    first = next(_batches(data, side, n, batch_size))
    layers = _tapped(where, model, params, state, first[0], first[1], capture)

    kinds = tuple((path, kind) for path, (_, kind) in layers.items())
    patterns = (capture,) if isinstance(capture, str) else tuple(capture)
    acc: dict[str, dict[str, np.ndarray]] = {}
    for x, s, mask in _batches(data, side, n, batch_size):
        part = jax.device_get(
            _reduce(model, patterns, kinds, params, state, x, s, jnp.asarray(mask))
        )
        for path, b in part.items():
            b = {k: np.asarray(v, np.float64) for k, v in b.items()}
            if path not in acc:
                acc[path] = b
                continue
            a = acc[path]
            total = a["count"] + b["count"]
            delta = b["mean"] - a["mean"]
            a["mean"] = a["mean"] + delta * b["count"] / total
            a["m2"] = a["m2"] + b["m2"] + delta**2 * a["count"] * b["count"] / total
            a["count"] = total
            a["min"] = np.minimum(a["min"], b["min"])
            a["max"] = np.maximum(a["max"], b["max"])
            a["positive"] = np.maximum(a["positive"], b["positive"])
            a["saturated"] = a["saturated"] + b["saturated"]
    result: dict[str, UnitStatistics] = {}
    for path, (shape, kind) in layers.items():
        a = acc[path]
        count = round(float(a["count"]))
        result[path] = UnitStatistics(
            path=path,
            kind=kind,
            shape=shape,
            count=count,
            mean=a["mean"],
            std=np.sqrt(a["m2"] / count),
            min=a["min"],
            max=a["max"],
            dead=(a["positive"] == 0) if kind == "relu" else None,
            saturated=a["saturated"] / count if kind in ("tanh", "sigmoid") else None,
        )
    return result


# --------------------------------------------------------------------------------------------
# Two-sample drift measures
# --------------------------------------------------------------------------------------------


def _samples_1d(where: str, name: str, values: Any) -> np.ndarray:
    a = np.asarray(values, np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ShapeError(f"{where}: {name} must be a non-empty 1-D array, given shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueRangeError(f"{where}: {name} holds NaN or inf values")
    return a


def _check_bins(where: str, bins: Any) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ConfigError(f"{where}: bins must be an int >= 2, given {bins!r}")
    return bins


def _psi(reference: np.ndarray, new: np.ndarray, bins: int, epsilon: float) -> float:
    inner = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    # Bin k is (e_{k-1}, e_k] with e_{-1} = -inf and e_K = +inf: searchsorted(side="left")
    # counts the edges strictly below each value.
    p = np.bincount(np.searchsorted(inner, reference, side="left"), minlength=inner.size + 1)
    q = np.bincount(np.searchsorted(inner, new, side="left"), minlength=inner.size + 1)
    p = np.maximum(p / reference.size, epsilon)
    q = np.maximum(q / new.size, epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def population_stability_index(
    reference: Any, new: Any, *, bins: int = 10, epsilon: float = _PSI_EPSILON
) -> float:
    """The population stability index (PSI) of ``new`` against ``reference``, one feature.

    The bins are cut at the reference's quantiles :math:`1/K, \\ldots, (K-1)/K` (NumPy's
    default linear interpolation; repeated cut points are merged, so a feature with many equal
    values gets fewer bins), the outer bins open (values outside the reference's range count
    in them); bin :math:`k` is :math:`(e_{k-1}, e_k]`. With :math:`p_k` and :math:`q_k` the
    shares of the reference and new samples in bin :math:`k`, each raised to at least
    ``epsilon`` so an empty bin stays finite,

    .. math:: \\mathrm{PSI} = \\sum_k (q_k - p_k) \\ln (q_k / p_k),

    the symmetrised Kullback-Leibler divergence of the two binned distributions. It is ``0``
    for identical shares; the common reading (Siddiqi 2006; Yurdakul 2018) is ``< 0.1`` no
    significant change, ``0.1``-``0.25`` moderate, ``> 0.25`` significant. Two samples of the
    same distribution give about :math:`(K - 1)(1/n + 1/m)` on average.

    Args:
        reference, new: 1-D samples ``(n,)`` and ``(m,)``, finite.
        bins: the number of quantile bins ``K`` (``>= 2``).
        epsilon: the floor of a bin's share.

    Returns:
        The PSI, a float ``>= 0``.

    Raises:
        ShapeError: a sample is not a non-empty 1-D array.
        ValueRangeError: a sample holds NaN or inf.
        ConfigError: ``bins < 2`` or ``epsilon`` outside ``(0, 1)``.

    References:
        Siddiqi, N. (2006). *Credit Risk Scorecards*. Wiley. Yurdakul, B. (2018). *Statistical
        properties of population stability index*. PhD thesis, Western Michigan University.

    >>> round(population_stability_index([1, 2, 3, 4, 5, 6, 7, 8], [1, 1, 1, 3, 5, 7, 8, 9],
    ...                                  bins=4), 4)
    0.2747
    """
    where = "population_stability_index"
    bins = _check_bins(where, bins)
    if not 0 < epsilon < 1:
        raise ConfigError(f"{where}: epsilon must be in (0, 1), given {epsilon!r}")
    ref = _samples_1d(where, "reference", reference)
    return _psi(ref, _samples_1d(where, "new", new), bins, epsilon)


def _kolmogorov_sf(lam: float) -> float:
    """:math:`Q(\\lambda) = 2 \\sum_{k \\ge 1} (-1)^{k-1} e^{-2 k^2 \\lambda^2}`, in [0, 1]."""
    if lam < 0.2:  # the series converges slowly there, and Q(0.2) = 1 - 3e-21
        return 1.0
    k = np.arange(1, 101)
    terms = 2.0 * (-1.0) ** (k - 1) * np.exp(-2.0 * k**2 * lam**2)
    return float(min(max(np.sum(terms), 0.0), 1.0))


def _ks(a_sorted: np.ndarray, b_sorted: np.ndarray) -> float:
    both = np.concatenate([a_sorted, b_sorted])
    cdf_a = np.searchsorted(a_sorted, both, side="right") / a_sorted.size
    cdf_b = np.searchsorted(b_sorted, both, side="right") / b_sorted.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def ks_2samp(reference: Any, new: Any) -> tuple[float, float]:
    """The two-sample Kolmogorov-Smirnov statistic and its asymptotic p-value, one feature.

    The statistic is computed exactly from the sorted samples: the largest gap between the two
    empirical distribution functions, evaluated at every sample point (where it is attained),

    .. math:: D = \\max_t |F_n(t) - G_m(t)|.

    The p-value is Kolmogorov's limit law with the effective size
    :math:`n_e = n m / (n + m)`: :math:`p = Q(\\sqrt{n_e} D)`,
    :math:`Q(\\lambda) = 2 \\sum_{k \\ge 1} (-1)^{k-1} e^{-2 k^2 \\lambda^2}` (Smirnov 1948);
    good when :math:`n_e` is a few dozen or more, conservative for ties.
    ``scipy.stats.ks_2samp`` gives the same statistic (scipy is not needed here).

    Args:
        reference, new: 1-D samples ``(n,)`` and ``(m,)``, finite.

    Returns:
        ``(D, p_value)``.

    Raises:
        ShapeError: a sample is not a non-empty 1-D array.
        ValueRangeError: a sample holds NaN or inf.

    References:
        Smirnov, N. (1948). Table for estimating the goodness of fit of empirical distributions.
        *Annals of Mathematical Statistics* 19(2), 279-281.

    >>> ks_2samp([0.1, 0.2, 0.3, 0.4], [0.35, 0.5, 0.6, 0.7])[0]
    0.75
    """
    where = "ks_2samp"
    a = np.sort(_samples_1d(where, "reference", reference))
    b = np.sort(_samples_1d(where, "new", new))
    d = _ks(a, b)
    n_e = a.size * b.size / (a.size + b.size)
    return d, _kolmogorov_sf(math.sqrt(n_e) * d)


# --------------------------------------------------------------------------------------------
# The drift report
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class DriftGroup:
    """The drift of one input array's features or one layer's units.

    Attributes:
        path: ``"input"`` (``"input['a']"``, ``"input[0]"`` for the leaves of a pytree of
            inputs), or the layer path.
        kind: ``"input"`` or ``"layer"``.
        shape: the shape of one example's features (an input's ``x.shape[1:]``) or
            ``(units,)`` for a layer.
        psi, ks, p_value: ``(F,)`` float64, ``F = prod(shape)``: per feature/unit PSI, KS
            statistic and KS p-value.
        drifted: ``(F,)`` bool, the features/units that passed both thresholds.
    """

    path: str
    kind: Literal["input", "layer"]
    shape: tuple[int, ...]
    psi: np.ndarray
    ks: np.ndarray
    p_value: np.ndarray
    drifted: np.ndarray

    @property
    def fraction_drifted(self) -> float:
        """The share of this group's features/units that drifted."""
        return float(np.mean(self.drifted))

    def label(self, index: int) -> str:
        """``"input[3, 4, 0]"`` for a feature's position in ``shape``, ``"dense_0[7]"`` for a
        unit."""
        position = np.unravel_index(index, self.shape) if self.shape else ()
        return f"{self.path}[{', '.join(str(int(i)) for i in position)}]"


@dataclasses.dataclass(frozen=True, eq=False)
class DriftReport:
    """What :func:`drift_report` found: per input feature and per layer unit, PSI and KS.

    A feature or unit has *drifted* when its PSI exceeds ``threshold`` **and** its KS test
    rejects "same distribution" at level ``alpha`` after a Bonferroni correction over every
    feature and unit of the report (p-value ``< alpha / tests``). The PSI says the change is
    large; the KS test says it is more than sampling noise (with a few hundred samples, a
    feature that is almost always 0, such as a border pixel, can get a PSI above 0.25 from a
    handful of non-zero values).

    Attributes:
        groups: the inputs first, then the layers in the order the model taps them.
        threshold: the PSI threshold.
        alpha: the family-wise KS significance level.
        bins: the PSI's quantile bins.
        n_reference, n_new: the number of examples of each dataset.
    """

    groups: tuple[DriftGroup, ...]
    threshold: float
    alpha: float
    bins: int
    n_reference: int
    n_new: int

    @property
    def tests(self) -> int:
        """The number of features and units compared (the Bonferroni divisor)."""
        return sum(g.psi.size for g in self.groups)

    def group(self, path: str) -> DriftGroup:
        """The group at ``path`` (``"input"``, ``"dense_0"``)."""
        for g in self.groups:
            if g.path == path:
                return g
        raise ConfigError(
            f"DriftReport.group: no group {path!r}; groups: {[g.path for g in self.groups]}"
        )

    def to_rows(self, path: str | None = None) -> list[dict[str, Any]]:
        """Every feature and unit (of the group ``path``, or all), most drifted first.

        Sorted by PSI, then KS statistic, descending. Each row: ``rank`` (from 1), ``path``,
        ``kind``, ``index`` (flat), ``label`` (``"input[3, 4]"``), ``psi``, ``ks``,
        ``p_value``, ``drifted``.
        """
        groups = self.groups if path is None else (self.group(path),)
        order = sorted(
            ((g, i) for g in groups for i in range(g.psi.size)),
            key=lambda gi: (-float(gi[0].psi[gi[1]]), -float(gi[0].ks[gi[1]])),
        )
        return [
            {
                "rank": rank,
                "path": g.path,
                "kind": g.kind,
                "index": i,
                "label": g.label(i),
                "psi": float(g.psi[i]),
                "ks": float(g.ks[i]),
                "p_value": float(g.p_value[i]),
                "drifted": bool(g.drifted[i]),
            }
            for rank, (g, i) in enumerate(order, start=1)
        ]

    def drifted(self) -> list[dict[str, Any]]:
        """The rows of :meth:`to_rows` that drifted, most drifted first."""
        return [r for r in self.to_rows() if r["drifted"]]

    def layer_summary(self) -> list[dict[str, Any]]:
        """One row per group, in network order: ``path``, ``kind``, ``units``, ``drifted``
        (count), ``fraction`` drifted, ``mean_psi``, ``max_psi``, ``max_ks``."""
        return [
            {
                "path": g.path,
                "kind": g.kind,
                "units": int(g.psi.size),
                "drifted": int(np.sum(g.drifted)),
                "fraction": g.fraction_drifted,
                "mean_psi": float(np.mean(g.psi)),
                "max_psi": float(np.max(g.psi)),
                "max_ks": float(np.max(g.ks)),
            }
            for g in self.groups
        ]

    def __str__(self) -> str:
        return self.table()

    def table(self, top: int = 10) -> str:
        """The per-layer summary, then the ``top`` most drifted features/units, as text."""
        head = (
            f"Drift of {self.n_new} new examples against {self.n_reference} reference examples: "
            f"drifted = PSI > {self.threshold:g} and KS p < {self.alpha:g}/{self.tests} "
            f"(Bonferroni)"
        )
        summary = [
            (
                r["path"],
                r["kind"],
                str(r["units"]),
                f"{r['drifted']} ({r['fraction']:.0%})",
                f"{r['mean_psi']:.3f}",
                f"{r['max_psi']:.3f}",
                f"{r['max_ks']:.3f}",
            )
            for r in self.layer_summary()
        ]
        rows = self.to_rows()
        shown = rows[:top]
        ranked = [
            (
                str(r["rank"]),
                r["label"],
                f"{r['psi']:.3f}",
                f"{r['ks']:.3f}",
                f"{r['p_value']:.2g}",
                "yes" if r["drifted"] else "no",
            )
            for r in shown
        ]
        parts = [
            head,
            "",
            _format(("path", "kind", "units", "drifted", "mean PSI", "max PSI", "max KS"), summary),
            "",
            _format(("rank", "feature/unit", "PSI", "KS", "KS p", "drifted"), ranked),
        ]
        if len(shown) < len(rows):
            rest = sum(r["drifted"] for r in rows[top:])
            parts.append(f"... {len(rows) - top} more ({rest} of them drifted)")
        return "\n".join(parts)


def _format(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header), line.format(*("-" * w for w in widths))]
    return "\n".join(out + [line.format(*r).rstrip() for r in rows])


def _collect(
    where: str,
    model: Layer,
    params: Params,
    state: State,
    data: Any,
    side: Side | None,
    batch_size: int,
    capture: str | Sequence[str],
    layers: Mapping[str, tuple[tuple[int, ...], Kind]] | None,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[tuple[int, ...], Kind]]]:
    """Every captured layer's unit samples ``(N * positions, units)`` on the host."""
    n = _check_data(where, data, side)
    first = next(_batches(data, side, n, batch_size))
    found = _tapped(where, model, params, state, first[0], first[1], capture)
    if layers is not None and {p: s[1:] for p, (s, _) in found.items()} != {
        p: s[1:] for p, (s, _) in layers.items()
    }:
        raise ShapeError(
            f"{where}: the new data's tapped values differ from the reference's: "
            f"{ {p: s[1:] for p, (s, _) in layers.items()} } vs "
            f"{ {p: s[1:] for p, (s, _) in found.items()} }"
        )

    patterns = (capture,) if isinstance(capture, str) else tuple(capture)
    parts: dict[str, list[np.ndarray]] = {path: [] for path in found}
    for x, s, mask in _batches(data, side, n, batch_size):
        values = _unit_values(model, patterns, tuple(found), params, state, x, s)
        for path, v in jax.device_get(values).items():
            v = np.asarray(v, np.float64)[mask]
            parts[path].append(v.reshape(-1, v.shape[-1]))
    return {path: np.concatenate(p) for path, p in parts.items()}, found


def _input_features(data: Any) -> dict[str, tuple[np.ndarray, tuple[int, ...]]]:
    leaves = jax.tree_util.tree_leaves_with_path(data)
    out = {}
    for keypath, leaf in leaves:
        a = np.asarray(leaf, np.float64)
        name = "input" + (jax.tree_util.keystr(keypath) if keypath else "")
        out[name] = (a.reshape(a.shape[0], -1), tuple(a.shape[1:]))
    return out


def _compare(
    name: str, reference: np.ndarray, new: np.ndarray, bins: int
) -> tuple[np.ndarray, ...]:
    """Per column PSI, KS and p-value of ``(n, F)`` and ``(m, F)`` samples of ``name``."""
    for which, a in (("reference", reference), ("new", new)):
        if not np.all(np.isfinite(a)):
            raise ValueRangeError(
                f"drift_report: the {which} values of {name!r} hold NaN or inf (columns "
                f"{np.flatnonzero(~np.all(np.isfinite(a), axis=0)).tolist()[:10]})"
            )
    features = reference.shape[1]
    psi, ks, p = np.empty(features), np.empty(features), np.empty(features)
    ref_sorted, new_sorted = np.sort(reference, axis=0), np.sort(new, axis=0)
    n_e = reference.shape[0] * new.shape[0] / (reference.shape[0] + new.shape[0])
    for f in range(features):
        psi[f] = _psi(ref_sorted[:, f], new_sorted[:, f], bins, _PSI_EPSILON)
        ks[f] = _ks(ref_sorted[:, f], new_sorted[:, f])
        p[f] = _kolmogorov_sf(math.sqrt(n_e) * ks[f])
    return psi, ks, p


def drift_report(
    model: Layer,
    params: Params,
    state: State,
    reference: Any,
    new: Any,
    *,
    reference_side: Side | None = None,
    new_side: Side | None = None,
    capture: str | Sequence[str] = "*",
    bins: int = 10,
    threshold: float = 0.25,
    alpha: float = 0.05,
    batch_size: int = 256,
) -> DriftReport:
    """Compare new data with reference data per input feature and per layer unit.

    For every input feature (each position of each input array after the example axis) and
    every unit of every captured layer output (samples: examples x positions, as in
    :func:`activation_statistics`), the reference and new samples are compared with

    * the population stability index (:func:`population_stability_index`, ``bins`` quantile
      bins of the reference, shares floored at ``1e-4``):
      :math:`\\mathrm{PSI} = \\sum_k (q_k - p_k) \\ln(q_k / p_k)`, and
    * the two-sample Kolmogorov-Smirnov statistic :math:`D = \\max_t |F_n(t) - G_m(t)|`,
      exact from the sorted samples, with its asymptotic p-value (:func:`ks_2samp`).

    A feature or unit *drifted* when ``PSI > threshold`` (default 0.25, the usual "significant
    shift") and the KS p-value ``< alpha / (number of features and units)`` (Bonferroni, so that
    with ``alpha=0.05`` two samples of one distribution flag nothing in 95% of reports, however
    many units the model has). Activations are collected batch by batch under one ``jax.jit``
    (eval mode) and kept on the host as float64 ``(samples, units)`` arrays: the exact KS
    statistic needs the samples, so memory grows with ``N`` times the captured units.

    Args:
        model: a layer instance.
        params, state: its parameters and state.
        reference, new: inputs ``(N, ...)`` and ``(M, ...)`` (arrays, or pytrees of arrays
            with the same structure), each with the examples on the leading axis.
        reference_side, new_side: side inputs of each, batched with them, or ``None``.
        capture: path pattern(s) of the layer outputs to compare (``()`` for the inputs only).
        bins: the PSI's quantile bins (``>= 2``).
        threshold: the PSI above which a change counts as large.
        alpha: the family-wise significance level of the KS tests, in ``(0, 1)``.
        batch_size: examples per forward batch.

    Returns:
        A :class:`DriftReport`: ``str(report)`` is a table, ``report.to_rows()`` ranks every
        feature and unit, ``report.layer_summary()`` gives the share of drifted units per
        layer, and :func:`plot_drift` draws it.

    Raises:
        ArgumentError: ``model`` is not a layer or the data holds no arrays.
        ShapeError: the two datasets differ in structure or feature shapes.
        ValueRangeError: an input or a captured activation holds NaN or inf.
        ConfigError: bad ``bins``, ``threshold``, ``alpha``, ``batch_size`` or ``capture``.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax import Dense, Sequential, relu
    >>> model = Sequential(Dense(4), relu, Dense(1))
    >>> params, state = model.init(jax.random.key(0), jnp.zeros((2, 3)))
    >>> ref = jax.random.normal(jax.random.key(1), (400, 3))
    >>> new = jax.random.normal(jax.random.key(2), (400, 3)).at[:, 1].add(2.0)
    >>> report = drift_report(model, params, state, ref, new)
    >>> [(g.path, g.psi.shape) for g in report.groups]
    [('input', (3,)), ('0', (4,)), ('1', (4,)), ('2', (1,))]
    >>> report.to_rows("input")[0]["label"], report.group("input").drifted.tolist()
    ('input[1]', [False, True, False])
    """
    where = "drift_report"
    check_layer(where, model)
    bins = _check_bins(where, bins)
    batch_size = _check_batch_size(where, batch_size)
    for name, value in (("threshold", threshold), ("alpha", alpha)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{where}: {name} must be a number > 0, given {value!r}")
    if alpha >= 1:
        raise ConfigError(f"{where}: alpha must be in (0, 1), given {alpha!r}")
    n_ref = _check_data(where, reference, reference_side)
    n_new = _check_data(where, new, new_side)
    ref_inputs, new_inputs = _input_features(reference), _input_features(new)
    if {k: s for k, (_, s) in ref_inputs.items()} != {k: s for k, (_, s) in new_inputs.items()}:
        raise ShapeError(
            f"{where}: reference and new inputs must have the same structure and feature "
            f"shapes, given { ({k: s for k, (_, s) in ref_inputs.items()}) } and "
            f"{ ({k: s for k, (_, s) in new_inputs.items()}) }"
        )
    compared: list[tuple[str, Literal["input", "layer"], tuple[int, ...], tuple[np.ndarray, ...]]]
    compared = [
        (name, "input", shape, _compare(name, a, new_inputs[name][0], bins))
        for name, (a, shape) in ref_inputs.items()
    ]
    patterns = (capture,) if isinstance(capture, str) else tuple(capture)
    if patterns:
        ref_units, layers = _collect(
            where, model, params, state, reference, reference_side, batch_size, capture, None
        )
        new_units, _ = _collect(
            where, model, params, state, new, new_side, batch_size, capture, layers
        )
        compared += [
            (path, "layer", (ref_units[path].shape[1],), _compare(path, u, new_units[path], bins))
            for path, u in ref_units.items()
        ]
    tests = sum(psi.size for *_, (psi, _, _) in compared)
    groups = tuple(
        DriftGroup(
            path=name,
            kind=kind,
            shape=shape,
            psi=psi,
            ks=ks,
            p_value=p,
            drifted=(psi > threshold) & (p < alpha / tests),
        )
        for name, kind, shape, (psi, ks, p) in compared
    )
    return DriftReport(groups, float(threshold), float(alpha), bins, n_ref, n_new)


# --------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------


def plot_drift(
    report: DriftReport,
    *,
    image_shape: tuple[int, int] | None = None,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Any:
    """Draw where a shift shows: per input feature, and per layer.

    Panels:

    * **Input features**: the PSI of every input feature (bars, drifted ones in red), with the
      threshold as a dashed line (log scale).
    * **Input PSI as an image** (when ``image_shape`` is given, e.g. ``(8, 8)`` for digits):
      the input features' PSI laid out as the image, drifted pixels marked, with a colourbar.
    * **Drifted units per layer**: the share of drifted features/units of each group, inputs
      first, then the layers in network order.
    * **PSI per layer**: every unit's PSI as a dot per layer (log scale), the median as a bar
      marker and the threshold as a dashed line.

    Args:
        report: a :class:`DriftReport`.
        image_shape: ``(height, width)`` to draw the (first) input's PSI as an image; its size
            must equal the number of features of that input.
        path: where to save the figure as a PNG (parent folders are created); not saved if
            ``None``.
        title: the figure's title.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ImportError: matplotlib is not installed.
        ArgumentError: ``report`` is not a :class:`DriftReport`.
        ConfigError: ``image_shape`` does not match the input's features.
    """
    if not isinstance(report, DriftReport):
        raise ArgumentError(f"plot_drift: expected a DriftReport, given {describe(report)}")
    try:
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plot_drift needs matplotlib: pip install 'nn-jax[examples]'") from e
    inputs = [g for g in report.groups if g.kind == "input"]
    if image_shape is not None and (
        len(image_shape) != 2
        or not all(isinstance(s, int) and s > 0 for s in image_shape)
        or math.prod(image_shape) != inputs[0].psi.size
    ):
        raise ConfigError(
            f"plot_drift: image_shape must be (height, width) with height * width = "
            f"{inputs[0].psi.size} (the features of {inputs[0].path!r}), given "
            f"{image_shape!r}"
        )
    floor = 1e-4  # PSI is drawn on a log scale; 0 is drawn at the floor
    drifted_colour, calm_colour = "tab:red", "tab:blue"

    fig = Figure(figsize=(12.0, 7.6 + (0.4 if title else 0.0)), layout="constrained")
    if image_shape is None:
        grid = fig.add_gridspec(2, 2, width_ratios=(1.0, 1.8))
    else:
        grid = fig.add_gridspec(2, 3, width_ratios=(1.2, 1.6, 1.0))
    ax_in = fig.add_subplot(grid[0, :2] if image_shape is not None else grid[0, :])
    psi = np.concatenate([g.psi for g in inputs])
    drifted = np.concatenate([g.drifted for g in inputs])
    positions = np.arange(psi.size)
    ax_in.bar(
        positions,
        np.maximum(psi, floor),
        width=1.0,
        color=[drifted_colour if d else calm_colour for d in drifted],
    )
    ax_in.axhline(report.threshold, color="black", linestyle="--", linewidth=1)
    ax_in.set_yscale("log")
    ax_in.set_xlim(-0.5, psi.size - 0.5)
    ax_in.set(
        title="PSI of each input feature",
        xlabel="input feature (flat index" + (", inputs in order)" if len(inputs) > 1 else ")"),
        ylabel=f"PSI (log scale; 0 drawn at {floor:g})",
    )
    ax_in.legend(
        handles=[
            Patch(color=drifted_colour, label=f"drifted ({int(drifted.sum())})"),
            Patch(color=calm_colour, label="not drifted"),
            Line2D([], [], color="black", linestyle="--", label=f"PSI = {report.threshold:g}"),
        ],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize="small",
    )
    if image_shape is not None:
        ax_img = fig.add_subplot(grid[0, 2])
        image = np.maximum(inputs[0].psi, floor).reshape(image_shape)
        from matplotlib.colors import LogNorm

        low = min(float(image.min()), report.threshold / 10)
        high = max(float(image.max()), report.threshold * 10)
        shown = ax_img.imshow(
            image, cmap="viridis", norm=LogNorm(vmin=low, vmax=high), aspect="auto"
        )
        rows_d, cols_d = np.unravel_index(np.flatnonzero(inputs[0].drifted), image_shape)
        ax_img.scatter(cols_d, rows_d, marker="x", color="red", s=18)
        ax_img.set(
            title=f"PSI per pixel of {inputs[0].path}\n(x: drifted)",
            xlabel="column",
            ylabel="row",
        )
        fig.colorbar(shown, ax=ax_img, label="PSI (log scale)")

    names = [g.path for g in report.groups]
    ticks = np.arange(len(names))
    ax_frac = fig.add_subplot(grid[1, 0])
    fractions = [g.fraction_drifted for g in report.groups]
    ax_frac.bar(
        ticks,
        fractions,
        color=["tab:green" if g.kind == "input" else "tab:purple" for g in report.groups],
    )
    ax_frac.set_ylim(0, 1.25)  # room for the legend above a bar at 1
    ax_frac.set_yticks(np.linspace(0, 1, 6))
    ax_frac.set_xticks(ticks, names, rotation=45, ha="right", fontsize="small")
    ax_frac.set(
        title="Drifted share per layer",
        xlabel="input / layer (network order)",
        ylabel="share of features/units drifted",
    )
    ax_frac.legend(
        handles=[Patch(color="tab:green", label="input"), Patch(color="tab:purple", label="layer")],
        loc="upper center",
        ncol=2,
        fontsize="small",
    )

    ax_psi = fig.add_subplot(grid[1, 1:])
    rng = np.random.default_rng(0)
    for i, g in enumerate(report.groups):
        jitter = rng.uniform(-0.25, 0.25, g.psi.size)
        ax_psi.scatter(
            i + jitter,
            np.maximum(g.psi, floor),
            s=6,
            alpha=0.6,
            color=[drifted_colour if d else calm_colour for d in g.drifted],
        )
        ax_psi.hlines(np.maximum(np.median(g.psi), floor), i - 0.35, i + 0.35, color="black")
    ax_psi.axhline(report.threshold, color="black", linestyle="--", linewidth=1)
    ax_psi.set_yscale("log")
    ax_psi.set_xticks(ticks, names, rotation=45, ha="right", fontsize="small")
    ax_psi.set_title("PSI of every feature/unit per layer", loc="left")
    ax_psi.set(
        xlabel="input / layer (network order)",
        ylabel=f"PSI (log scale; 0 drawn at {floor:g})",
    )
    ax_psi.legend(
        handles=[
            Line2D([], [], marker="o", linestyle="", color=drifted_colour, label="drifted"),
            Line2D([], [], marker="o", linestyle="", color=calm_colour, label="not drifted"),
            Line2D([], [], color="black", label="median"),
            Line2D([], [], color="black", linestyle="--", label=f"PSI = {report.threshold:g}"),
        ],
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=2,
        fontsize="small",
        frameon=False,
    )
    if title:
        fig.suptitle(title)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig
