"""Init time: how long each framework takes to initialize a deep model, first call and warm.

A notebook user feels the *first* init after every kernel restart: tracing and compiling the
parameter draws (and, for Flax Linen and Haiku, the forward pass ``init`` runs) in a fresh
process. So each framework and model is initialized in its own child process
(``python -m nn_jax.bench.init_time CASE``), timed inside the child after its imports, the
result waited for (``jax.block_until_ready``): **first** is that call, **warm** the second one
in the same process with a new key. The persistent compilation cache is off in the children.

Each framework's idiomatic init of the same architecture:

* nn_jax: ``model.init(key, x)``;
* Flax Linen: ``module.init(key, x)``; Haiku: ``hk.transform_with_state(f).init(key, x)``
  (both run the forward pass on ``x``);
* Flax NNX: constructing the module with ``nnx.Rngs(key)``; Equinox: constructing the module
  with a key (both initialize in the constructor, so only constructors are written here).

The models (:data:`CASES`): ResNet-8 (the ``resnet`` workload's ``ResNet(10, stage_sizes=(1, 1,
1), width=16)``) on 32x32x3 images and a 12-layer ``TransformerEncoder(10, d_model=128,
num_heads=4, vocab_size=1000)`` on 64 tokens, batch 32. The children run round by round, the
frameworks' order rotated each round; first and warm times are medians over the rounds, and the
ratios to Flax Linen medians of the per-round ratios.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax.bench.registry import FRAMEWORK_LABELS
from nn_jax.bench.timing import paired_ratio
from nn_jax.bench.workloads.transformer import sinusoidal

INIT_FRAMEWORKS: tuple[str, ...] = ("nn_jax", "flax_linen", "flax_nnx", "equinox", "haiku")
"""The frameworks whose init is measured (Flax NNX's init does not depend on its jit style)."""
CHILD_TIMEOUT_S = 600.0
"""A child that has not reported after this many seconds is killed and reported as a timeout."""
ROUNDS = 3
"""Children per framework and model (one fresh process each)."""

VOCAB, CLASSES, HEADS, SEQ = 1000, 10, 4, 64
BN_MOMENTUM, EPS = 0.9, 1e-5


@dataclasses.dataclass(frozen=True)
class InitCase:
    """One framework's init of one model, as the child gets it (JSON on its command line).

    ``layers`` is the transformer's depth, or the ResNet's blocks per stage (3 stages of
    ``width``, ``2 * width`` and ``4 * width`` channels); ``width`` the transformer's ``d_model``
    or the ResNet's stem channels.
    """

    framework: str
    model: str  # "resnet" or "transformer"
    layers: int
    width: int
    batch: int = 32

    @property
    def description(self) -> str:
        if self.model == "resnet":
            depth = 2 + 6 * self.layers
            return f"ResNet-{depth} (width {self.width}) on 32x32x3, batch {self.batch}"
        return (
            f"Transformer encoder ({self.layers} layers, d {self.width}, {HEADS} heads, seq "
            f"{SEQ}), batch {self.batch}"
        )

    def example_input(self) -> np.ndarray:
        """The batch ``init`` sees: ``(B, 32, 32, 3)`` images or ``(B, 64)`` tokens."""
        rng = np.random.default_rng(0)
        if self.model == "resnet":
            return rng.standard_normal((self.batch, 32, 32, 3), np.float32)
        return rng.integers(0, VOCAB, (self.batch, SEQ), np.int32)


CASES: tuple[tuple[str, int, int], ...] = (("resnet", 1, 16), ("transformer", 12, 128))
"""``(model, layers, width)`` of the measured models: ResNet-8 and a 12-layer transformer."""


# --------------------------------------------------------------------------------------------
# Each framework's init, ``init(key) -> tree of arrays`` for a case and its example input.

Init = Callable[[jax.Array], Any]


def _resnet_blocks(case: InitCase) -> list[tuple[int, int, int]]:
    """``(in_channels, out_channels, stride)`` of each basic block, as nn_jax's ResNet."""
    blocks, cin = [], case.width
    for stage in range(3):
        for j in range(case.layers):
            cout = case.width * 2**stage
            blocks.append((cin, cout, 2 if stage > 0 and j == 0 else 1))
            cin = cout
    return blocks


def _nn_jax(case: InitCase, x: jax.Array) -> Init:
    from nn_jax.models.cnn import ResNet
    from nn_jax.models.transformer import TransformerEncoder

    model: Any
    if case.model == "resnet":
        model = ResNet(CLASSES, stage_sizes=(case.layers,) * 3, width=case.width)
    else:
        model = TransformerEncoder(
            CLASSES,
            num_layers=case.layers,
            d_model=case.width,
            num_heads=HEADS,
            vocab_size=VOCAB,
        )
    return lambda key: model.init(key, x)


def _linen(case: InitCase, x: jax.Array) -> Init:
    import flax.linen as nn

    def norm() -> nn.LayerNorm:
        return nn.LayerNorm(epsilon=EPS)

    def conv(features: int, kernel: int, stride: int = 1) -> nn.Conv:
        return nn.Conv(features, (kernel, kernel), stride, padding="SAME", use_bias=False)

    def bn() -> nn.BatchNorm:
        return nn.BatchNorm(use_running_average=False, momentum=BN_MOMENTUM, epsilon=EPS)

    class Block(nn.Module):
        cout: int
        stride: int

        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            h = nn.relu(bn()(conv(self.cout, 3, self.stride)(x)))
            h = bn()(conv(self.cout, 3)(h))
            if self.stride != 1 or x.shape[-1] != self.cout:
                x = bn()(conv(self.cout, 1, self.stride)(x))
            return nn.relu(h + x)

    class ResNet(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            x = nn.relu(bn()(conv(case.width, 3)(x)))
            for _, cout, stride in _resnet_blocks(case):
                x = Block(cout, stride)(x)
            return nn.Dense(CLASSES)(jnp.mean(x, axis=(1, 2)))

    class EncoderBlock(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            x = x + nn.MultiHeadDotProductAttention(HEADS)(norm()(x))
            return x + nn.Dense(case.width)(nn.gelu(nn.Dense(4 * case.width)(norm()(x))))

    class Encoder(nn.Module):
        @nn.compact
        def __call__(self, tokens: jax.Array) -> jax.Array:
            h = nn.Embed(VOCAB, case.width)(tokens) * math.sqrt(case.width)
            h = h + sinusoidal(SEQ, case.width)[None]
            for _ in range(case.layers):
                h = EncoderBlock()(h)
            return nn.Dense(CLASSES)(jnp.mean(norm()(h), axis=1))

    module = ResNet() if case.model == "resnet" else Encoder()
    return lambda key: module.init(key, x)


def _haiku(case: InitCase, x: jax.Array) -> Init:
    import haiku as hk

    def norm(h: jax.Array) -> jax.Array:
        return hk.LayerNorm(-1, create_scale=True, create_offset=True, eps=EPS)(h)

    def conv(h: jax.Array, features: int, kernel: int, stride: int = 1) -> jax.Array:
        return hk.Conv2D(features, kernel, stride, padding="SAME", with_bias=False)(h)

    def bn(h: jax.Array) -> jax.Array:
        return hk.BatchNorm(True, True, BN_MOMENTUM, eps=EPS)(h, is_training=True)

    def resnet(x: jax.Array) -> jax.Array:
        x = jax.nn.relu(bn(conv(x, case.width, 3)))
        for cin, cout, stride in _resnet_blocks(case):
            h = bn(conv(jax.nn.relu(bn(conv(x, cout, 3, stride))), cout, 3))
            if stride != 1 or cin != cout:
                x = bn(conv(x, cout, 1, stride))
            x = jax.nn.relu(h + x)
        return hk.Linear(CLASSES)(jnp.mean(x, axis=(1, 2)))

    def encoder(tokens: jax.Array) -> jax.Array:
        h = hk.Embed(VOCAB, case.width)(tokens) * math.sqrt(case.width)
        h = h + sinusoidal(SEQ, case.width)[None]
        for _ in range(case.layers):
            a = norm(h)
            attention = hk.MultiHeadAttention(
                HEADS, case.width // HEADS, w_init=hk.initializers.VarianceScaling()
            )
            h = h + attention(a, a, a)
            h = h + hk.Linear(case.width)(jax.nn.gelu(hk.Linear(4 * case.width)(norm(h))))
        return hk.Linear(CLASSES)(jnp.mean(norm(h), axis=1))

    model = hk.transform_with_state(resnet if case.model == "resnet" else encoder)
    return lambda key: model.init(key, x)


def _nnx(case: InitCase, x: jax.Array) -> Init:
    from flax import nnx

    def conv(cin: int, cout: int, kernel: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
        kernel_size = (kernel, kernel)
        return nnx.Conv(
            cin, cout, kernel_size, strides=stride, padding="SAME", use_bias=False, rngs=rngs
        )

    def bn(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
        return nnx.BatchNorm(channels, momentum=BN_MOMENTUM, epsilon=EPS, rngs=rngs)

    class Block(nnx.Module):
        def __init__(self, cin: int, cout: int, stride: int, rngs: nnx.Rngs) -> None:
            self.conv_0, self.bn_0 = conv(cin, cout, 3, stride, rngs), bn(cout, rngs)
            self.conv_1, self.bn_1 = conv(cout, cout, 3, 1, rngs), bn(cout, rngs)
            if stride != 1 or cin != cout:
                self.proj, self.proj_bn = conv(cin, cout, 1, stride, rngs), bn(cout, rngs)

    class ResNet(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.stem, self.stem_bn = conv(3, case.width, 3, 1, rngs), bn(case.width, rngs)
            self.blocks = nnx.List([Block(*b, rngs) for b in _resnet_blocks(case)])
            self.head = nnx.Linear(4 * case.width, CLASSES, rngs=rngs)

    class EncoderBlock(nnx.Module):
        def __init__(self, d: int, rngs: nnx.Rngs) -> None:
            self.attention_norm = nnx.LayerNorm(d, epsilon=EPS, rngs=rngs)
            self.attention = nnx.MultiHeadAttention(HEADS, d, decode=False, rngs=rngs)
            self.mlp_norm = nnx.LayerNorm(d, epsilon=EPS, rngs=rngs)
            self.up = nnx.Linear(d, 4 * d, rngs=rngs)
            self.down = nnx.Linear(4 * d, d, rngs=rngs)

    class Encoder(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            d = case.width
            self.embedding = nnx.Embed(VOCAB, d, rngs=rngs)
            self.blocks = nnx.List([EncoderBlock(d, rngs) for _ in range(case.layers)])
            self.final_norm = nnx.LayerNorm(d, epsilon=EPS, rngs=rngs)
            self.head = nnx.Linear(d, CLASSES, rngs=rngs)

    cls = ResNet if case.model == "resnet" else Encoder
    return lambda key: nnx.state(cls(nnx.Rngs(key)))


def _equinox(case: InitCase, x: jax.Array) -> Init:
    import equinox as eqx

    def conv(cin: int, cout: int, kernel: int, stride: int, key: jax.Array) -> eqx.nn.Conv2d:
        return eqx.nn.Conv2d(cin, cout, kernel, stride, padding="SAME", use_bias=False, key=key)

    def bn(channels: int) -> eqx.nn.BatchNorm:
        return eqx.nn.BatchNorm(channels, "batch", eps=EPS, momentum=BN_MOMENTUM, mode="batch")

    class Block(eqx.Module):
        conv_0: eqx.nn.Conv2d
        bn_0: eqx.nn.BatchNorm
        conv_1: eqx.nn.Conv2d
        bn_1: eqx.nn.BatchNorm
        proj: eqx.nn.Conv2d | None
        proj_bn: eqx.nn.BatchNorm | None

        def __init__(self, cin: int, cout: int, stride: int, key: jax.Array) -> None:
            k0, k1, k2 = jax.random.split(key, 3)
            self.conv_0, self.bn_0 = conv(cin, cout, 3, stride, k0), bn(cout)
            self.conv_1, self.bn_1 = conv(cout, cout, 3, 1, k1), bn(cout)
            project = stride != 1 or cin != cout
            self.proj = conv(cin, cout, 1, stride, k2) if project else None
            self.proj_bn = bn(cout) if project else None

    class ResNet(eqx.Module):
        stem: eqx.nn.Conv2d
        stem_bn: eqx.nn.BatchNorm
        blocks: list[Block]
        head: eqx.nn.Linear

        def __init__(self, key: jax.Array) -> None:
            blocks = _resnet_blocks(case)
            stem, head, *keys = jax.random.split(key, 2 + len(blocks))
            self.stem, self.stem_bn = conv(3, case.width, 3, 1, stem), bn(case.width)
            self.blocks = [Block(*b, k) for b, k in zip(blocks, keys, strict=True)]
            self.head = eqx.nn.Linear(4 * case.width, CLASSES, key=head)

    class EncoderBlock(eqx.Module):
        attention_norm: eqx.nn.LayerNorm
        attention: eqx.nn.MultiheadAttention
        mlp_norm: eqx.nn.LayerNorm
        up: eqx.nn.Linear
        down: eqx.nn.Linear

        def __init__(self, d: int, key: jax.Array) -> None:
            ka, ku, kd = jax.random.split(key, 3)
            biases = {f"use_{n}_bias": True for n in ("query", "key", "value", "output")}
            self.attention_norm = eqx.nn.LayerNorm(d, eps=EPS)
            self.attention = eqx.nn.MultiheadAttention(HEADS, d, key=ka, **biases)
            self.mlp_norm = eqx.nn.LayerNorm(d, eps=EPS)
            self.up, self.down = eqx.nn.Linear(d, 4 * d, key=ku), eqx.nn.Linear(4 * d, d, key=kd)

    class Encoder(eqx.Module):
        embedding: eqx.nn.Embedding
        blocks: list[EncoderBlock]
        final_norm: eqx.nn.LayerNorm
        head: eqx.nn.Linear

        def __init__(self, key: jax.Array) -> None:
            d = case.width
            embedding, head, *keys = jax.random.split(key, 2 + case.layers)
            self.embedding = eqx.nn.Embedding(VOCAB, d, key=embedding)
            self.blocks = [EncoderBlock(d, k) for k in keys]
            self.final_norm = eqx.nn.LayerNorm(d, eps=EPS)
            self.head = eqx.nn.Linear(d, CLASSES, key=head)

    if case.model == "resnet":
        return lambda key: eqx.nn.make_with_state(ResNet)(key)
    return lambda key: Encoder(key)


INITS: dict[str, Callable[[InitCase, jax.Array], Init]] = {
    "nn_jax": _nn_jax,
    "flax_linen": _linen,
    "flax_nnx": _nnx,
    "equinox": _equinox,
    "haiku": _haiku,
}


def _arrays(tree: Any) -> list[jax.Array]:
    return [leaf for leaf in jax.tree.leaves(tree) if isinstance(leaf, jax.Array)]


def time_init(case: InitCase) -> dict[str, float]:
    """``{"first_s", "warm_s"}``: the case's first init in this process and a second one."""
    x = jnp.asarray(case.example_input())
    init = INITS[case.framework](case, x)
    keys = jax.random.key(0), jax.random.key(1)
    times = []
    for key in keys:
        start = time.perf_counter()
        jax.block_until_ready(_arrays(init(key)))
        times.append(time.perf_counter() - start)
    return {"first_s": times[0], "warm_s": times[1]}


# --------------------------------------------------------------------------------------------
# The parent: one child per case and round, killed on timeout.


def child_command(case: InitCase) -> list[str]:
    """The command that times ``case`` in a fresh Python process."""
    return [sys.executable, "-m", "nn_jax.bench.init_time", json.dumps(dataclasses.asdict(case))]


def run_child(command: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run a child and read the JSON object on its last output line.

    Returns that object with ``"status": "ok"``, or ``{"status": "timeout" | "failed",
    "error": ...}``. A child still running after ``timeout`` seconds is killed with its whole
    process group.
    """
    # The children compile from scratch and, on a GPU the parent already holds, allocate only
    # what they need.
    env = {"JAX_ENABLE_COMPILATION_CACHE": "false", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    proc = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"status": "timeout", "error": f"no result after {timeout:g} s (killed)"}
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (err.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"status": "failed", "error": tail}
    return {"status": "ok", **json.loads(lines[-1])}


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if values else None


def measure_init(
    frameworks: Sequence[str],
    cases: Sequence[tuple[str, int, int]] = CASES,
    rounds: int = ROUNDS,
    timeout: float = CHILD_TIMEOUT_S,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """The init-time section of the report: one record per model and framework.

    A record has the model, framework, ``first_s`` and ``warm_s`` (medians over ``rounds``
    fresh processes, ``first_s_all``/``warm_s_all`` every round), the paired ratios to Flax
    Linen's (``first_to_linen``, ``warm_to_linen``; where Linen ran every round), and
    ``status`` (``"ok"``, else ``"timeout"`` or ``"failed"`` with ``error``).
    """
    chosen = [fw for fw in INIT_FRAMEWORKS if fw in frameworks]
    records = []
    for model, layers, width in cases:
        runs: dict[str, list[dict[str, Any]]] = {fw: [] for fw in chosen}
        for r in range(rounds):
            shift = r % max(len(chosen), 1)
            for fw in chosen[shift:] + chosen[:shift]:
                if runs[fw] and runs[fw][-1]["status"] != "ok":
                    continue  # failed or timed out once: not again
                case = InitCase(fw, model, layers, width)
                run = run_child(child_command(case), timeout)
                runs[fw].append(run)
                got = run.get("error") or (
                    f"first {run['first_s']:.2f} s, warm {run['warm_s']:.3f} s"
                )
                log(f"init {model} {fw} round {r + 1}/{rounds}: {got}")
        for fw in chosen:
            ok = [run for run in runs[fw] if run["status"] == "ok"]
            rec: dict[str, Any] = {
                "model": model,
                "description": InitCase(fw, model, layers, width).description,
                "framework": fw,
                "label": "Flax NNX" if fw == "flax_nnx" else FRAMEWORK_LABELS[fw],
                "status": runs[fw][-1]["status"],
                "error": runs[fw][-1].get("error"),
            }
            for t in ("first", "warm"):
                rec[f"{t}_s_all"] = [run[f"{t}_s"] for run in ok]
                rec[f"{t}_s"] = _median(rec[f"{t}_s_all"])
            records.append(rec)
    _add_linen_ratios(records)
    return {"rounds": rounds, "timeout_s": timeout, "records": records}


def _add_linen_ratios(records: list[dict[str, Any]]) -> None:
    linen = {rec["model"]: rec for rec in records if rec["framework"] == "flax_linen"}
    for rec in records:
        base = linen.get(rec["model"])
        for t in ("first", "warm"):
            times, ref = rec[f"{t}_s_all"], base[f"{t}_s_all"] if base else []
            paired = rec["status"] == "ok" and len(times) == len(ref) and bool(times)
            rec[f"{t}_to_linen"] = paired_ratio(times, ref) if paired else None


def main(argv: Sequence[str] | None = None) -> int:
    """The child: time one :class:`InitCase` (JSON) and print ``{"first_s", "warm_s"}``."""
    (text,) = sys.argv[1:] if argv is None else argv
    print(json.dumps(time_init(InitCase(**json.loads(text)))), flush=True)
    return 0


__all__ = [
    "CASES",
    "CHILD_TIMEOUT_S",
    "INITS",
    "INIT_FRAMEWORKS",
    "ROUNDS",
    "InitCase",
    "child_command",
    "main",
    "measure_init",
    "run_child",
    "time_init",
]

if __name__ == "__main__":
    raise SystemExit(main())
