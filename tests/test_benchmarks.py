"""Sanity checks of the benchmark suite (not timings): FLOP counts, like-for-like steps, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.bench import cli, flops, generation, init_time, runner, timing
from nn_jax.bench import report as report_lib
from nn_jax.bench.environment import framework_available
from nn_jax.bench.frameworks import leaf
from nn_jax.bench.registry import FRAMEWORKS
from nn_jax.bench.workloads import UNAVAILABLE, WORKLOADS, overhead
from nn_jax.dense import Dense
from nn_jax.models.transformer import TransformerLM

# Small batches: the checks are about the computation, not its speed.
TEST_BATCH = {
    "seed": 8,
    "mlp": 16,
    "cnn": 4,
    "resnet": 4,
    "lstm": 4,
    "transformer": 2,
    "lm": 2,
    "gcn": 60,
    "overhead": 8,
}
OTHERS = [fw for fw in FRAMEWORKS if fw not in ("nn_jax", "jax")]


@pytest.fixture(scope="module", autouse=True)
def shallow_overhead_stack():
    """The overhead workload 3 blocks deep here (1 -> 32, 32 -> 32, 32 -> 1: every block shape
    of depth 100; the builders read the depth from the reference), so as not to compile 100
    layers per framework, tens of seconds each on 2 CPU cores."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(overhead, "DEPTH", 3)
        yield


def test_every_workload_is_registered_with_nn_jax_and_raw_jax_steps():
    assert not UNAVAILABLE, f"workload families failed to load: {UNAVAILABLE}"
    assert set(WORKLOADS) == set(TEST_BATCH)
    for workload in WORKLOADS.values():
        assert {"nn_jax", "jax"} <= set(workload.builders), workload.name


# --------------------------------------------------------------------------------------------
# FLOPs.


def test_cost_analysis_of_a_dense_layer_is_2mkn():
    m, k, n = 64, 256, 128
    for use_bias in (False, True):
        layer = Dense(n, use_bias=use_bias)
        x = jnp.ones((m, k))
        params, _ = layer.init(jax.random.key(0), x)
        counted = flops.step_flops(jax.jit(lambda p, x, layer=layer: layer(p, x)), params, x)
        assert counted["flops"] == pytest.approx(2 * m * k * n, rel=0.01)
        assert counted["flops_analytic"] == 2 * m * k * n


def test_analytic_flops_count_the_costliest_branch_of_a_cond():
    # One branch of a cond runs: a (64, 256) @ (256, 128) product or a (64, 256) @ (256, 1).
    x, w = jnp.ones((64, 256)), jnp.ones((256, 128))
    branches = (lambda x, w: x @ w, lambda x, w: jnp.tile(x @ w[:, :1], (1, 128)))
    cond = jax.jit(lambda i, x, w: jax.lax.switch(i, branches, x, w))
    assert flops.step_flops(cond, 0, x, w)["flops_analytic"] == 2 * 64 * 256 * 128
    # nn_jax's Dense on CPU is such a cond (jax.lax.platform_dependent): counted once.
    m, k, n = 64, 256, 32
    layer = Dense(n, use_bias=False)
    x = jnp.ones((m, k))
    params, _ = layer.init(jax.random.key(0), x)
    grad = jax.jit(jax.grad(lambda p, x: layer(p, x).sum()))
    assert flops.step_flops(grad, params, x)["flops_analytic"] == 2 * (2 * m * k * n)


def test_analytic_conv_flops_match_the_closed_form_and_xla():
    n, h, w, cin, cout, kh, kw = 2, 12, 12, 3, 8, 3, 3
    x = jnp.ones((n, h, w, cin))
    k = jnp.ones((kh, kw, cin, cout))

    def conv(x: jax.Array, k: jax.Array, padding: str) -> jax.Array:
        return jax.lax.conv_general_dilated(
            x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    valid = flops.step_flops(jax.jit(lambda x, k: conv(x, k, "VALID")), x, k)
    expected = 2 * n * (h - 2) * (w - 2) * cout * kh * kw * cin
    assert valid["flops_analytic"] == expected
    assert valid["flops"] == pytest.approx(expected, rel=0.01)
    # "SAME": the analytic count includes the taps on padding; XLA counts only real ones
    # (per axis, 10 outputs see 3 taps and the 2 border outputs 2: 34 instead of 36).
    same = flops.step_flops(jax.jit(lambda x, k: conv(x, k, "SAME")), x, k)
    assert same["flops_analytic"] == 2 * n * h * w * cout * kh * kw * cin
    assert same["flops"] == pytest.approx(2 * n * 34 * 34 * cout * cin, rel=0.01)
    # The weight gradient is a convolution too (the batch is the contracted feature).
    loss = lambda k, x: conv(x, k, "VALID").sum()  # noqa: E731
    grad = flops.step_flops(jax.jit(jax.value_and_grad(loss)), k, x)
    assert grad["flops_analytic"] == 2 * expected
    assert grad["flops"] == pytest.approx(2 * expected, rel=0.02)


def _scanned_train_step(layers: int, unroll: int = 1, nested: int = 1):
    """A jitted SGD step of ``h = tanh(h @ W_l)`` over ``layers`` stacked weights, scanned."""

    def forward(ws: jax.Array, x: jax.Array) -> jax.Array:
        def body(h: jax.Array, w: jax.Array) -> tuple[jax.Array, None]:
            return jnp.tanh(h @ w), None

        if nested == 1:
            return jax.lax.scan(body, x, ws, unroll=unroll)[0]

        def outer(h: jax.Array, group: jax.Array) -> tuple[jax.Array, None]:
            return jax.lax.scan(body, h, group, unroll=unroll)[0], None

        return jax.lax.scan(outer, x, ws.reshape(nested, -1, *ws.shape[1:]))[0]

    def step(ws: jax.Array, x: jax.Array) -> jax.Array:
        grads = jax.grad(lambda ws: jnp.sum(forward(ws, x) ** 2))(ws)
        return ws - 0.1 * grads

    return jax.jit(step)


@pytest.mark.parametrize(
    ("layers", "unroll", "nested"), [(12, 1, 1), (12, 4, 1), (12, 5, 1), (12, 12, 1), (12, 3, 2)]
)
def test_scan_flop_correction_matches_an_analytic_count(layers, unroll, nested):
    batch, width = 16, 128
    ws = jnp.ones((layers, width, width))
    x = jnp.ones((batch, width))
    counted = flops.step_flops(_scanned_train_step(layers, unroll, nested), ws, x)
    # Forward h @ W, backward dh @ W^T and h^T @ dh: 3 matmuls of 2*B*D*D per layer; the SGD
    # update is 2 FLOPs per weight (the tanh and its derivative add about 0.5%). Where the
    # first layer's step is peeled out of the loop (unroll not dividing 12, or full unroll),
    # XLA drops its unused input gradient, 1/36 of the matmuls: within 3%.
    analytic = 3 * 2 * batch * width * width * layers
    assert counted["flops_analytic"] == analytic
    tolerance = 0.01 if layers % unroll == 0 and unroll < layers else 0.03
    assert counted["flops"] == pytest.approx(analytic + 2 * ws.size, rel=tolerance)
    if unroll < layers:  # XLA alone counts each loop body once: far fewer
        assert counted["flops_xla_raw"] < 0.6 * analytic


@pytest.mark.parametrize("name", ["seed", "mlp", "cnn", "lstm", "transformer", "lm", "gcn"])
def test_workload_flops_match_the_hand_count(name):
    """The corrected compiler count agrees with each workload's hand-written matmul count.

    The compiler also counts elementwise work (activations, the optimizer), so it may exceed
    the matmul-only hand count by a little; the jaxpr count of matmuls matches it closely.
    """
    workload = WORKLOADS[name]
    ref = workload.setup(TEST_BATCH[name], "float32", jax.random.key(0))
    impl = workload.builders["jax"](ref)
    counted = flops.step_flops(impl.step, *impl.carry, impl.batch)
    expected = workload.analytic_flops(ref)
    assert counted["flops_analytic"] == pytest.approx(expected, rel=0.02)
    assert expected * 0.98 <= counted["flops"] <= expected * (1.3 if name != "seed" else 2.0)


# --------------------------------------------------------------------------------------------
# Like for like: every framework computes the same losses from the same params and batch.


def _losses(workload_name: str, framework: str, dtype: str, steps: int = 2) -> list[float]:
    workload = WORKLOADS[workload_name]
    ref = workload.setup(TEST_BATCH[workload_name], dtype, jax.random.key(0))
    impl = workload.builders[framework](ref)
    return [impl.to_float(impl.run(1)) for _ in range(steps)]


@pytest.fixture(scope="module")
def nn_jax_losses():
    cache: dict[tuple[str, str], list[float]] = {}

    def get(name: str, dtype: str = "float32") -> list[float]:
        if (name, dtype) not in cache:
            cache[name, dtype] = _losses(name, "nn_jax", dtype)
        return cache[name, dtype]

    return get


@pytest.mark.parametrize("name", list(TEST_BATCH))
def test_raw_jax_step_computes_the_nn_jax_losses(name, nn_jax_losses):
    """Same loss at the same params (step 1), and after the same update (step 2)."""
    np.testing.assert_allclose(_losses(name, "jax", "float32"), nn_jax_losses(name), rtol=2e-5)


@pytest.mark.parametrize("name", list(TEST_BATCH))
def test_raw_jax_step_matches_nn_jax_in_bfloat16(name, nn_jax_losses):
    got = _losses(name, "jax", "bfloat16", steps=1)
    np.testing.assert_allclose(got, nn_jax_losses(name, "bfloat16")[:1], rtol=1e-2)


@pytest.mark.parametrize("framework", OTHERS)
@pytest.mark.parametrize("name", list(TEST_BATCH))
def test_other_frameworks_compute_the_nn_jax_losses(name, framework, nn_jax_losses):
    if not framework_available(framework):
        pytest.skip(f"{framework} is not installed")
    # Third-party layers broadcast implicitly; the suite's own code runs under "raise".
    with jax.numpy_rank_promotion("allow"):
        got = _losses(name, framework, "float32")
    np.testing.assert_allclose(got, nn_jax_losses(name), rtol=1e-4)


# --------------------------------------------------------------------------------------------
# The runner and the command line.


def test_quick_cli_run_writes_json_and_markdown(tmp_path):
    """``nn-jax bench --quick`` end to end in a subprocess, as CI runs it (budget: 2 minutes)."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "nn_jax.cli", "bench", "--quick", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "results.json").read_text())
    runs = {(r["workload"], r["framework"]) for r in report["results"]}
    frameworks = (*cli.QUICK_FRAMEWORKS, runner.CONTROL)  # raw JAX comes with its A/A control
    assert runs == {(w, f) for w in cli.QUICK_WORKLOADS for f in frameworks}
    recs = {(r["workload"], r["framework"]): r for r in report["results"]}
    for w in cli.QUICK_WORKLOADS:  # the control is raw JAX's step again: the same losses
        assert recs[w, runner.CONTROL]["first_loss"] == recs[w, "jax"]["first_loss"]
    for rec in report["results"]:
        assert rec["step_s"] > 0 and math.isfinite(rec["first_loss"])
        # CPU: no vendor peak, so no MFU; the fraction of the measured matmul instead.
        assert rec["flops"] > 0 and rec["mfu"] is None and 0 < rec["matmul_fraction"] < 1.5
        assert rec["peak_memory_bytes"] > 0
    assert report["meta"]["jax"] == jax.__version__ and report["meta"]["device_kind"]
    assert {t["workload"] for t in report["targets"]} == set(cli.QUICK_WORKLOADS)
    md = (out / "results.md").read_text()
    assert "| workload | dtype | framework |" in md and "raw JAX" in md and "A/A control" in md
    assert report["peaks"]["float32"]["flops_per_s"] is None and "of matmul" in md
    assert report["options"]["sections"] == ["steps"]
    assert report["init"] is None and report["generation"] is None
    assert "nn_jax bench" in done.stdout


@pytest.mark.parametrize(
    ("flag", "value", "allowed"),
    [
        ("--workloads", "seed,resnet50", "seed, mlp, cnn"),
        ("--dtype", "float16", "float32, bfloat16"),
        ("--frameworks", "pytorch", "nn_jax, jax, flax_linen"),
        ("--repeats", "0", "positive int"),
        ("--sections", "steps,speed", "steps, init, generation"),
    ],
)
def test_bad_cli_arguments_name_the_allowed_values(flag, value, allowed, capsys):
    from nn_jax.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and allowed in err and repr(value.split(",")[-1]) in err


def test_missing_frameworks_are_skipped_with_a_reason(monkeypatch):
    monkeypatch.setattr(runner, "framework_available", lambda fw: fw != "haiku")
    options = runner.Options(
        ("seed",), ("float32",), ("nn_jax", "haiku"), repeats=2, repeat_time=0.001
    )
    records, skipped = runner.bench_workload(WORKLOADS["seed"], "float32", options, runner.Quiet())
    assert [r["framework"] for r in records] == ["nn_jax"]
    assert skipped == [
        {
            "workload": "seed",
            "dtype": "float32",
            "framework": "haiku",
            "reason": "haiku is not installed",
        }
    ]


def test_targets_compare_nn_jax_with_raw_jax_and_the_fastest_other():
    def rec(fw, to_jax, to_nn=None):
        return {
            "workload": "seed",
            "dtype": "float32",
            "framework": fw,
            "ratio_to_jax": to_jax,
            "ratio_to_nn_jax": to_nn,
        }

    report = {
        "results": [
            rec("nn_jax", 1.01),
            rec("jax", 1.0, 0.99),
            rec("flax_linen", 1.5, 1.49),
            rec("flax_nnx", 4.0, 2.5),
            rec("haiku", 0.97, 0.96),
        ]
    }
    checks = {c["target"].split(" ")[2]: c for c in runner.targets(report)}
    assert checks["raw"]["met"] and checks["raw"]["value"] == 1.01
    fastest = checks["fastest"]
    assert "Haiku" in fastest["target"] and not fastest["met"]
    assert fastest["value"] == pytest.approx(1 / 0.96)
    nnx = next(c for c in runner.targets(report) if "NNX" in c["target"])
    assert nnx["value"] == 2.5 and not nnx["met"]


def test_a_missed_target_inside_the_per_round_quartiles_is_within_the_run_s_noise():
    """Quartiles of per-round ratios against NumPy's; a miss whose lower quartile reaches the
    target is within noise, one above it is not; nn_jax / other inverts other / nn_jax."""
    times, base = [1.0, 1.2, 0.9, 1.5, 1.1], [1.0, 1.0, 1.0, 1.0, 1.0]
    want = np.percentile(np.array(times) / np.array(base), [25, 75])
    np.testing.assert_allclose(timing.paired_quartiles(times, base), want)

    def rec(fw, to_jax, quartiles, to_nn=None, nn_quartiles=None):
        return {
            "workload": "mlp",
            "dtype": "float32",
            "framework": fw,
            "ratio_to_jax": to_jax,
            "ratio_to_jax_quartiles": quartiles,
            "ratio_to_nn_jax": to_nn,
            "ratio_to_nn_jax_quartiles": nn_quartiles,
        }

    report = {
        "results": [
            rec("nn_jax", 1.04, [0.98, 1.10]),
            rec("jax", 1.0, None, 0.96, [0.9, 1.02]),
            rec("haiku", 0.95, None, 0.91, [0.8, 0.88]),
        ]
    }
    raw, fastest = runner.targets(report)
    assert not raw["met"] and raw["within_noise"] and raw["quartiles"] == [0.98, 1.10]
    assert fastest["value"] == pytest.approx(1 / 0.91) and not fastest["within_noise"]
    assert fastest["quartiles"] == pytest.approx([1 / 0.88, 1 / 0.8])
    assert "within the run's noise" in report_lib.targets_text(
        {**report, "targets": [raw], "skipped": [], "unavailable_families": {}}
    )


def test_a_miss_no_larger_than_the_a_a_control_s_distance_from_1_is_within_the_run_s_noise():
    """With the control (raw JAX against itself) at 1.05, nn_jax at 1.06 (lower quartile 1.03,
    above the target) is within noise; at 1.08 it is not."""

    def report(nn_ratio):
        def rec(fw, to_jax, quartiles):
            return {"workload": "mlp", "dtype": "float32", "framework": fw,
                    "ratio_to_jax": to_jax, "ratio_to_jax_quartiles": quartiles}  # fmt: skip

        return {
            "results": [
                rec("nn_jax", nn_ratio, [1.03, 1.12]),
                rec("jax", 1.0, None),
                rec(runner.CONTROL, 1.05, [0.97, 1.1]),
            ]
        }

    (close,) = runner.targets(report(1.06))
    (far,) = runner.targets(report(1.08))
    assert close["control"] == far["control"] == 1.05
    assert not close["met"] and close["within_noise"]
    assert not far["met"] and not far["within_noise"]
    text = report_lib.targets_text(
        {**report(1.06), "targets": [close], "skipped": [], "unavailable_families": {}}
    )
    assert "A/A control 1.050: within the run's noise" in text


def test_leaf_finds_a_parameter_at_any_depth_and_names_the_tree_otherwise():
    tree = {"dense": {"w": np.ones(2)}, "b": np.zeros(2)}
    np.testing.assert_array_equal(leaf(tree, "w"), np.ones(2))
    with pytest.raises(LookupError, match=r"one parameter named 'kernel' in .*\['dense'\]\['w'\]"):
        leaf(tree, "kernel")


# --------------------------------------------------------------------------------------------
# MFU: FLOPs per step / step time / the device's peak (given, from the vendor table, or unknown).


@pytest.mark.parametrize(
    ("kind", "float32", "bfloat16"),
    [
        ("NVIDIA H100 80GB HBM3", 494.7e12, 989.4e12),  # H100 SXM
        ("NVIDIA H100 PCIe", 378e12, 756e12),
        ("NVIDIA H200", 494.7e12, 989.4e12),
        ("NVIDIA A100-SXM4-80GB", 156e12, 312e12),
        ("NVIDIA L4", 60e12, 121e12),
        ("NVIDIA L40", None, None),  # not the L4, not the L40S: unknown
        ("NVIDIA A10G", None, None),
        ("NVIDIA Tesla V100-SXM2-16GB", 15.7e12, None),  # no bfloat16 tensor cores
        ("TPU v4", 275e12, 275e12),
        ("TPU v5 lite", 197e12, 197e12),  # v5e
        ("TPU v5", 459e12, 459e12),  # v5p
        ("TPU v6 lite", 918e12, 918e12),  # v6e
        ("cpu", None, None),
    ],
)
def test_peak_table_lookup_by_device_kind(kind, float32, bfloat16):
    assert flops.table_peak(kind, "float32") == float32
    assert flops.table_peak(kind, "bfloat16") == bfloat16


def _record(dtype: str, flop_count: float | None, step_s: float) -> dict:
    return {"dtype": dtype, "flops": flop_count, "step_s": step_s}


def test_mfu_is_flops_per_step_over_step_time_over_the_given_peak():
    # 3 TFLOP per 20 ms step = 150 TFLOP/s; against a 600 TFLOP/s peak: 25%.
    assert flops.model_flops_utilization(3e12, 0.02, 600e12) == pytest.approx(0.25)
    peaks = timing.Peaks(jax.devices()[0], {"bfloat16": 600e12})
    peak = peaks.peak("bfloat16")
    assert peak["flops_per_s"] == 600e12 and "--peak-tflops 600" in peak["source"]
    records = [_record("bfloat16", 3e12, 0.02), _record("bfloat16", None, 0.02)]
    runner.add_mfu(records, {"bfloat16": peak})
    assert records[0]["achieved_flops_per_s"] == pytest.approx(150e12)
    assert records[0]["mfu"] == pytest.approx(0.25)
    assert records[1]["mfu"] is None and records[1]["achieved_flops_per_s"] is None


def test_mfu_is_unknown_without_a_peak_and_the_measured_matmul_is_reported_apart():
    peaks = timing.Peaks(jax.devices()[0])  # CPU: not in the table
    peaks.samples["float32"] = [100e9, 400e9, 200e9]  # as measure() would record them
    peak = peaks.peak("bfloat16")  # CPU bfloat16 matmuls run in float32: the same samples
    assert peak["flops_per_s"] is None and "unknown" in peak["source"]
    assert peak["matmul_flops_per_s"] == 400e9 and peak["matmul_median_flops_per_s"] == 200e9
    records = [_record("bfloat16", 2e9, 0.01)]  # 200 GFLOP/s
    runner.add_mfu(records, {"bfloat16": peak})
    assert records[0]["mfu"] is None
    assert records[0]["matmul_fraction"] == pytest.approx(0.5)
    report = {"results": [], "peaks": {"bfloat16": peak}}
    report["meta"] = {
        "device_kind": "cpu",
        "platform": "cpu",
        "host": {"cpu": "x", "cpu_count": 2},
        "jax": "0",
        "jaxlib": "0",
        "timestamp": "t",
        "load_average_start": [0.0],
        "load_average_end": [0.0],
    }
    assert "bfloat16: - (unknown for cpu bfloat16" in report_lib.header(report)


def test_peak_tflops_flag_for_every_dtype_or_per_dtype(capsys):
    from nn_jax.cli import build_parser

    def options(*argv: str) -> runner.Options:
        return cli.options_from_args(build_parser().parse_args(["bench", *argv]))

    assert options("--peak-tflops", "989").peak_flops == (
        ("float32", 989e12),
        ("bfloat16", 989e12),
    )
    both = options("--peak-tflops", "bfloat16=989,float32=494.5").peak_flops
    assert both == (("bfloat16", 989e12), ("float32", 494.5e12))
    assert options().peak_flops == ()
    for bad in ("fast", "float16=100", "-3"):
        with pytest.raises(SystemExit):
            options("--peak-tflops", bad)
        assert "--peak-tflops" in capsys.readouterr().err


def test_sections_flag_selects_what_a_run_measures():
    from nn_jax.cli import build_parser

    def sections(*argv: str) -> tuple[str, ...]:
        return cli.options_from_args(build_parser().parse_args(["bench", *argv])).sections

    assert sections() == ("steps", "init", "generation") == sections("--sections", "all")
    assert sections("--quick") == ("steps",)
    assert sections("--quick", "--sections", "generation,init") == ("generation", "init")


# --------------------------------------------------------------------------------------------
# Init time and generation tokens/s.


@pytest.mark.parametrize("model", ["resnet", "transformer"])
def test_every_framework_inits_the_same_architecture(model):
    """Traced, not compiled. ResNet: every framework has the same kernel elements (conv and
    dense; batch-norm state differs by framework). Transformer (no state): the same arrays."""

    def count(framework: str) -> int:
        case = init_time.InitCase(framework, model, layers=1, width=8, batch=2)
        init = init_time.INITS[framework](case, jnp.asarray(case.example_input()))

        def floats(key: jax.Array) -> list[jax.Array]:
            leaves = jax.tree.leaves(init(key))
            return [a for a in leaves if isinstance(a, jax.Array) and a.dtype == jnp.float32]

        arrays = jax.eval_shape(floats, jax.random.key(0))
        if model == "resnet":  # kernels: two axes > 1 (Haiku's batch norm has (1, 1, 1, C))
            arrays = [a for a in arrays if sum(n > 1 for n in a.shape) >= 2]
        return sum(math.prod(a.shape) for a in arrays)

    d, classes = 8, 10
    if model == "resnet":  # 3x3: stem, 3 stages x 2 convs; 1x1: 2 projections; head
        convs = [(3, d), (d, d), (d, d), (d, 2 * d), (2 * d, 2 * d), (2 * d, 4 * d), (4 * d, 4 * d)]
        expected = sum(9 * i * o for i, o in convs) + 2 * d * d + 8 * d * d + 4 * d * classes
    else:  # embedding; q, k, v, o, up, down; 2 layer norms, final norm; head
        expected = 1000 * d + (4 * d * d + 4 * d) + (8 * d * d + 5 * d) + 3 * 2 * d
        expected += d * classes + classes
    got = {fw: count(fw) for fw in init_time.INIT_FRAMEWORKS}
    assert got == dict.fromkeys(got, expected)


def test_init_child_reports_first_and_warm_times_and_is_killed_on_timeout():
    case = init_time.InitCase("nn_jax", "transformer", layers=1, width=8, batch=2)
    done = init_time.run_child(init_time.child_command(case), timeout=120)
    assert done["status"] == "ok", done
    assert done["first_s"] > 0 and done["warm_s"] > 0
    start = time.perf_counter()
    slow = init_time.run_child([sys.executable, "-c", "import time; time.sleep(60)"], 0.3)
    assert slow == {"status": "timeout", "error": "no result after 0.3 s (killed)"}
    assert time.perf_counter() - start < 30  # killed, not waited for
    failed = init_time.run_child([sys.executable, "-c", "raise SystemExit('no model')"], 30)
    assert failed == {"status": "failed", "error": "no model"}


def _fake_child(calls):
    """A ``run_child`` stand-in: Linen twice nn_jax's time, Haiku times out."""

    def run_child(command, timeout):
        case = json.loads(command[-1])
        calls.append((case["model"], case["framework"]))
        if case["framework"] == "haiku":
            return {"status": "timeout", "error": f"no result after {timeout:g} s (killed)"}
        first = {"nn_jax": 1.0, "flax_linen": 2.0}[case["framework"]] * case["layers"]
        return {"status": "ok", "first_s": first, "warm_s": first / 100}

    return run_child


def test_run_reports_init_times_and_generation_in_json_and_tables(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(init_time, "run_child", _fake_child(calls))
    gen_stats = {"call_s_p25": 0.009, "call_s_p75": 0.011, "compile_s": 1.0, "call_times_s": []}
    records = [
        {"method": m, "label": generation.METHODS[m], "call_s": t, "tokens_per_s": 512 / t}
        | gen_stats
        for m, t in (("kv_cache", 0.01), ("no_cache", 0.2))
    ]
    fake_generation = {"model": "LM", "dtype": "float32", "batch": 8, "prompt_tokens": 16}
    fake_generation |= {"new_tokens": 64, "records": records, "speedup": 20.0}
    monkeypatch.setattr(runner, "measure_generation", lambda *args: fake_generation)
    frameworks = ("nn_jax", "jax", "flax_linen", "haiku")
    options = runner.Options(("seed",), ("float32",), frameworks, sections=("init", "generation"))
    report = json.loads(json.dumps(runner.run(options)))
    assert report["results"] == [] and report["generation"]["speedup"] == 20.0
    # Three rounds, frameworks rotated; Haiku not retried after its timeout.
    rounds = ["nn_jax", "flax_linen", "haiku", "flax_linen", "nn_jax", "nn_jax", "flax_linen"]
    assert calls == [("resnet", fw) for fw in rounds] + [("transformer", fw) for fw in rounds]
    recs = {(r["model"], r["framework"]): r for r in report["init"]["records"]}
    nn = recs["resnet", "nn_jax"]
    assert nn["first_to_linen"] == 0.5 and nn["warm_to_linen"] == 0.5
    assert nn["first_s_all"] == [1.0] * 3 and nn["first_s"] == 1.0 and nn["warm_s"] == 0.01
    haiku = recs["transformer", "haiku"]
    assert haiku["status"] == "timeout" and haiku["first_s"] is None
    text, md = report_lib.text_table(report), report_lib.markdown(report)
    for out in (text, md):
        assert "first / Linen" in out and "0.500x" in out and "51.2k tokens/s" in out
        assert "20.000x" in out and "ResNet-8 (width 16)" in out
    assert "init transformer haiku: timeout: no result after 600 s" in report_lib.targets_text(
        report
    )


def test_uncached_generation_is_greedy_and_a_token_mismatch_is_an_error():
    lm = TransformerLM(17, num_layers=1, d_model=8, num_heads=2)
    shapes, _ = jax.eval_shape(lm.init, jax.random.key(0), jnp.zeros((2, 7), jnp.int32))
    rng = np.random.default_rng(0)  # random params without compiling init
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)
    prompt = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    tokens = np.asarray(generation.generate_without_cache(lm, params, jnp.asarray(prompt), 4))
    # Greedy: each new token is the argmax of a full forward pass at the position before it.
    logits, _ = jax.jit(lm.apply)(params, {}, jnp.asarray(tokens))
    np.testing.assert_array_equal(tokens[:, :3], prompt)
    np.testing.assert_array_equal(tokens[:, 3:], np.argmax(logits[:, 2:-1], axis=-1))
    generation.check_same_tokens(tokens, tokens.copy())
    wrong = tokens.copy()
    wrong[1, 5] = (wrong[1, 5] + 1) % 17
    with pytest.raises(ValueError, match="differ at 1 positions, first at row 1, position 5"):
        generation.check_same_tokens(tokens, wrong)
