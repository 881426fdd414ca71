"""nn_jax.drift: activation statistics and drift reports against independent references.

PSI against hand-worked examples, KS against scipy, activation statistics against NumPy forward
passes written out from the params, and drift reports on synthetic data whose shift is known.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import nn_jax as nn
from nn_jax.drift import (
    DriftReport,
    activation_statistics,
    drift_report,
    ks_2samp,
    plot_drift,
    population_stability_index,
)
from nn_jax.errors import ArgumentError, ConfigError, ShapeError, ValueRangeError
from nn_jax.monitor import activation_health

# --------------------------------------------------------------------------------------------
# PSI and KS
# --------------------------------------------------------------------------------------------


def test_psi_by_hand():
    # Reference 1..8, 4 bins: quantile cut points (linear) 2.75, 4.5, 6.25, so the bins hold
    # {1,2}, {3,4}, {5,6}, {7,8}: p = 1/4 each. New [1,1,1,3,5,7,8,9] -> 3, 1, 1, 3 of 8.
    ref = np.arange(1.0, 9.0)
    q = np.array([3, 1, 1, 3]) / 8
    expected = np.sum((q - 0.25) * np.log(q / 0.25))
    assert math.isclose(expected, 0.25 * math.log(1.5) + 0.25 * math.log(2.0))
    got = population_stability_index(ref, [1, 1, 1, 3, 5, 7, 8, 9], bins=4)
    assert got == pytest.approx(expected, rel=1e-12)

    # Empty bins are floored at epsilon: all new values in the first bin.
    eps = 1e-4
    q = np.array([1.0, eps, eps, eps])
    expected = np.sum((q - 0.25) * np.log(q / 0.25))
    got = population_stability_index(ref, [1, 1, 1, 1, 2, 2, 2, 2], bins=4)
    assert got == pytest.approx(expected, rel=1e-12)

    # Ties: 7 zeros and a one. The three cut points are all 0 -> two bins (-inf, 0], (0, inf)
    # holding 7/8 and 1/8 of the reference; the new sample is half zeros, half ones.
    got = population_stability_index([0] * 7 + [1], [0] * 4 + [1] * 4, bins=4)
    expected = (0.5 - 7 / 8) * math.log(0.5 / (7 / 8)) + (0.5 - 1 / 8) * math.log(0.5 / (1 / 8))
    assert got == pytest.approx(expected, rel=1e-12)

    # Identical samples: 0. Values outside the reference range land in the outer bins.
    assert population_stability_index(ref, ref, bins=4) == 0.0
    q = np.array([eps, eps, eps, 1.0])  # everything past the last cut point
    expected = np.sum((q - 0.25) * np.log(q / 0.25))
    assert population_stability_index(ref, ref + 100, bins=4) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("n", "m", "ties"), [(30, 45, False), (200, 150, False), (60, 60, True), (7, 300, True)]
)
def test_ks_matches_scipy(n, m, ties):
    rng = np.random.default_rng(n + m)
    a = rng.normal(size=n)
    b = rng.normal(0.3, 1.2, size=m)
    if ties:
        a, b = np.round(a * 2), np.round(b * 2)
    d, p = ks_2samp(a, b)
    assert d == pytest.approx(scipy.stats.ks_2samp(a, b).statistic, abs=1e-12)
    n_e = n * m / (n + m)
    assert p == pytest.approx(scipy.stats.kstwobign.sf(math.sqrt(n_e) * d), rel=1e-6, abs=1e-12)


def test_psi_and_ks_reject_bad_inputs():
    with pytest.raises(ConfigError, match=r"population_stability_index: bins must be an int >= 2"):
        population_stability_index([1.0, 2.0], [1.0, 2.0], bins=1)
    with pytest.raises(ShapeError, match=r"ks_2samp: new must be a non-empty 1-D array"):
        ks_2samp([1.0, 2.0], np.zeros((2, 2)))
    with pytest.raises(ValueRangeError, match="ks_2samp: reference holds NaN or inf"):
        ks_2samp([1.0, np.nan], [1.0])


# --------------------------------------------------------------------------------------------
# Activation statistics
# --------------------------------------------------------------------------------------------


def _numpy_forward(params, x):
    """The forward pass of Sequential(Dense(6), relu, Dense(4), tanh, Dense(3), sigmoid)."""
    p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params.items()}
    out = {"0": x @ p["0"]["w"] + p["0"]["b"]}
    out["1"] = np.maximum(out["0"], 0.0)
    out["2"] = out["1"] @ p["2"]["w"] + p["2"]["b"]
    out["3"] = np.tanh(out["2"])
    out["4"] = out["3"] @ p["4"]["w"] + p["4"]["b"]
    out["5"] = 1.0 / (1.0 + np.exp(-out["4"]))
    return out


def test_activation_statistics_match_numpy_with_a_partial_last_batch():
    model = nn.Sequential(nn.Dense(6), nn.relu, nn.Dense(4), nn.tanh, nn.Dense(3), nn.sigmoid)
    x = np.asarray(jax.random.normal(jax.random.key(1), (23, 5)), np.float32)
    params, state = model.init(jax.random.key(0), x[:2])
    # Kill ReLU units 2 and 4 by hand (a bias no input can overcome) and make tanh saturate.
    params["0"]["b"] = params["0"]["b"].at[jnp.array([2, 4])].set(-100.0)
    params["2"]["w"] = params["2"]["w"] * 8.0
    stats = activation_statistics(model, params, state, x, batch_size=5)  # 23 = 4 * 5 + 3

    ref = _numpy_forward(params, x.astype(np.float64))
    assert list(stats) == ["0", "1", "2", "3", "4", "5"]
    assert {p: s.kind for p, s in stats.items()} == {
        "0": "other", "1": "relu", "2": "other", "3": "tanh", "4": "other", "5": "sigmoid"
    }  # fmt: skip
    for path, s in stats.items():
        assert s.count == 23 and s.units == ref[path].shape[1]
        np.testing.assert_allclose(s.mean, ref[path].mean(axis=0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s.std, ref[path].std(axis=0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s.min, ref[path].min(axis=0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s.max, ref[path].max(axis=0), rtol=1e-5, atol=1e-5)
    dead = np.all(ref["1"] <= 0, axis=0)
    assert dead[[2, 4]].all()
    np.testing.assert_array_equal(stats["1"].dead, dead)
    assert stats["1"].dead_fraction == pytest.approx(dead.mean())
    saturated = np.mean(np.abs(ref["3"]) > 0.99, axis=0)
    assert 0 < saturated.mean() < 1  # the test means something
    np.testing.assert_allclose(stats["3"].saturated, saturated, atol=1e-12)
    sig = ref["5"]
    np.testing.assert_allclose(
        stats["5"].saturated, np.mean((sig < 0.01) | (sig > 0.99), axis=0), atol=1e-12
    )
    assert stats["0"].dead is None and stats["0"].saturated is None

    # The same rule as the training monitor: its fractions on the whole dataset agree.
    values = jax.jit(lambda p, x: nn.apply_with_intermediates(model, p, state, x)[2])(params, x)
    with nn.core.tapping() as taps:  # the layer at each path, from shapes alone
        jax.eval_shape(lambda p, x: model.apply(p, state, x), params, x)
    health, _, _ = activation_health(values, taps.layers)
    assert set(health) == {"dead_relu/1", "saturated/3", "saturated/5"}
    assert float(health["dead_relu/1"]) == pytest.approx(stats["1"].dead_fraction)
    assert float(health["saturated/3"]) == pytest.approx(stats["3"].saturation_fraction)
    assert float(health["saturated/5"]) == pytest.approx(stats["5"].saturation_fraction)

    # One batch bigger than the dataset gives the same numbers.
    whole = activation_statistics(model, params, state, x, batch_size=64, capture="1")
    assert list(whole) == ["1"]
    np.testing.assert_allclose(whole["1"].mean, stats["1"].mean, rtol=1e-5, atol=1e-6)


def test_activation_statistics_pool_positions():
    # (N, T, F) inputs: every position is a sample of each unit.
    model = nn.Sequential(nn.Dense(4), nn.relu)
    x = np.asarray(jax.random.normal(jax.random.key(2), (7, 3, 2)), np.float32)
    params, state = model.init(jax.random.key(0), x[:1])
    stats = activation_statistics(model, params, state, x, batch_size=3)
    w, b = (np.asarray(params["0"][k], np.float64) for k in ("w", "b"))
    h = np.maximum(x.astype(np.float64) @ w + b, 0.0).reshape(-1, 4)
    assert stats["1"].count == 21
    np.testing.assert_allclose(stats["1"].mean, h.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["1"].std, h.std(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(stats["1"].dead, np.all(h <= 0, axis=0))


def test_activation_statistics_batch_side_inputs_with_the_data():
    # Each example has its own positions (a side input with the example axis first): a batch
    # must get its own rows of them, the padded last batch included (5 = 2 + 2 + 1).
    model = nn.Sequential(nn.SinusoidalPositionalEncoding(), nn.Dense(3))
    x = np.asarray(jax.random.normal(jax.random.key(3), (5, 4, 2)), np.float32)
    side = {"positions": np.arange(20, dtype=np.int32).reshape(5, 4) * 7 % 11}
    params, state = model.init(jax.random.key(0), x[:1])
    stats = activation_statistics(model, params, state, x, side=side, batch_size=2)
    # Reference: one unbatched call, then NumPy over all 5 * 4 rows.
    _, _, values = nn.apply_with_intermediates(model, params, state, x, side=side)
    for path in ("0", "1"):
        rows = np.asarray(values[path], np.float64).reshape(-1, values[path].shape[-1])
        np.testing.assert_allclose(stats[path].mean, rows.mean(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats[path].std, rows.std(axis=0), rtol=1e-4, atol=1e-6)
    # Without the side input the positions are 0..3 for every example: other numbers.
    plain = activation_statistics(model, params, state, x, batch_size=2)
    assert not np.allclose(plain["0"].mean, stats["0"].mean, atol=1e-3)


def test_activation_statistics_errors():
    model = nn.Sequential(nn.Dense(2))
    x = np.zeros((4, 3), np.float32)
    params, state = model.init(jax.random.key(0), x)
    with pytest.raises(ArgumentError, match="activation_statistics: data must be an array"):
        activation_statistics(model, params, state, "data")
    with pytest.raises(ShapeError, match=r"same leading example axis, given shapes \[\(4, 3\)"):
        activation_statistics(model, params, state, (x, x[:3]))
    with pytest.raises(ConfigError, match="batch_size must be an int >= 1, given 0"):
        activation_statistics(model, params, state, x, batch_size=0)
    with pytest.raises(ConfigError, match=r"capture='nothing\*' matches no tapped"):
        activation_statistics(model, params, state, x, capture="nothing*")


# --------------------------------------------------------------------------------------------
# Drift reports on synthetic data
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic():
    model = nn.Sequential(nn.Dense(8), nn.relu, nn.Dense(2))
    k_ref, k_same, k_new, k_init = jax.random.split(jax.random.key(0), 4)
    reference = np.asarray(jax.random.normal(k_ref, (500, 6)))
    same = np.asarray(jax.random.normal(k_same, (400, 6)))
    shifted = np.array(jax.random.normal(k_new, (400, 6)))
    shifted[:, 3] += 1.0  # only feature 3 moves
    params, state = model.init(k_init, reference[:2])
    # Make hidden unit 0 read feature 3 only, and unit 1 ignore it: the shift must show in
    # unit 0 of the hidden layers and not in unit 1.
    w = np.asarray(params["0"]["w"]).copy()
    w[:, 0] = 0.0
    w[3, 0] = 1.0
    w[3, 1] = 0.0
    params["0"]["w"] = jnp.asarray(w)
    shifted_report = drift_report(model, params, state, reference, shifted, batch_size=128)
    same_report = drift_report(model, params, state, reference, same, batch_size=128)
    return reference, shifted, shifted_report, same_report


def test_drift_report_finds_the_shifted_feature(synthetic):
    reference, shifted, report, _ = synthetic
    assert [g.path for g in report.groups] == ["input", "0", "1", "2"]
    inputs = report.to_rows("input")
    assert inputs[0]["index"] == 3 and inputs[0]["label"] == "input[3]"
    np.testing.assert_array_equal(report.group("input").drifted, np.arange(6) == 3)
    # The numbers are the one-feature functions', themselves checked against references.
    for f in range(6):
        psi = population_stability_index(reference[:, f], shifted[:, f])
        d, p = ks_2samp(reference[:, f], shifted[:, f])
        g = report.group("input")
        assert (g.psi[f], g.ks[f], g.p_value[f]) == pytest.approx((psi, d, p))
    assert report.group("input").psi[3] > 0.25
    # Inside: hidden unit 0 (a copy of feature 3) drifts, unit 1 (blind to it) does not.
    assert report.group("0").drifted[0] and not report.group("0").drifted[1]
    summary = {r["path"]: r for r in report.layer_summary()}
    assert summary["input"]["drifted"] == 1
    assert summary["input"]["fraction"] == pytest.approx(1 / 6)
    text = str(report)
    assert "input[3]" in text and "PSI > 0.25" in text
    assert report.drifted()[0]["psi"] >= report.drifted()[-1]["psi"]
    assert report.tests == 6 + 8 + 8 + 2


def test_drift_report_flags_nothing_without_a_shift(synthetic):
    *_, report = synthetic
    assert report.drifted() == []
    assert not report.group("input").drifted.any()
    assert max(report.group("input").psi) < 0.25
    assert "0 (0%)" in str(report)


def test_drift_report_checks_its_inputs(synthetic):
    reference, *_ = synthetic
    model = nn.Sequential(nn.Dense(2))
    params, state = model.init(jax.random.key(0), reference[:2])
    with pytest.raises(ShapeError, match="drift_report: reference and new inputs must have"):
        drift_report(model, params, state, reference, reference[:, :5])
    with pytest.raises(ConfigError, match="drift_report: threshold must be a number > 0"):
        drift_report(model, params, state, reference, reference, threshold=0)
    bad = reference.copy()
    bad[7, 2] = np.nan
    with pytest.raises(
        ValueRangeError, match=r"the new values of 'input' hold NaN or inf \(columns \[2\]"
    ):
        drift_report(model, params, state, reference, bad, capture=())
    # Inputs only: no layer is run.
    report = drift_report(model, params, state, reference, reference, capture=())
    assert [g.path for g in report.groups] == ["input"]


def test_plot_drift_has_titled_labelled_axes(synthetic, tmp_path):
    *_, report, _ = synthetic
    assert isinstance(report, DriftReport)
    fig = plot_drift(report, image_shape=(2, 3), path=tmp_path / "drift.png", title="Drift")
    assert (tmp_path / "drift.png").stat().st_size > 0
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(axes) == 4
    for ax in axes:
        assert ax.get_title() or ax.get_title(loc="left")
        assert ax.get_xlabel() and ax.get_ylabel()
    assert sum(ax.get_legend() is not None for ax in axes) >= 3
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    with pytest.raises(ConfigError, match="plot_drift: image_shape must be"):
        plot_drift(report, image_shape=(4, 4))
    with pytest.raises(ArgumentError, match="plot_drift: expected a DriftReport"):
        plot_drift({"psi": 1})
