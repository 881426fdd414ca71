"""The rule table (nn_jax.rules): precedence, errors naming the pattern or path, optimizer
wrapping checked against plain optax and hand-computed AdamW/SGD, shardings checked against the
mesh arithmetic (and, in one 8-device child process, against real per-device shards)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nn_jax import ConfigError, Dense, LayerNorm
from nn_jax.errors import ShardingError
from nn_jax.rules import Rule, Rules

ENCODER, NORM, HEAD = Dense(8), LayerNorm(), Dense(3)
X = jax.ShapeDtypeStruct((4, 5), jnp.float32)
MESH_2x4 = AbstractMesh((2, 4), ("data", "fsdp"))


@pytest.fixture(scope="module")
def params():
    """{"encoder": {w (5, 8), b (8,)}, "norm": {scale (8,), b (8,)}, "head": {w (8, 3), b (3,)}}."""
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    enc, _ = ENCODER.init(k1, X)
    norm, _ = NORM.init(k2, jax.ShapeDtypeStruct((4, 8), jnp.float32))
    head, _ = HEAD.init(k3, jax.ShapeDtypeStruct((4, 8), jnp.float32))
    # Non-trivial norm params, so weight decay on them would show.
    norm = jax.tree.map(lambda a: a + 0.5, norm)
    return {"encoder": enc, "norm": norm, "head": head}


def _loss(params, x, y):
    h = jnp.tanh(ENCODER(params["encoder"], x))
    h = NORM(params["norm"], h)
    return jnp.mean((HEAD(params["head"], h) - y) ** 2)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    return x.astype(np.float32), y.astype(np.float32)


def _train(optimizer, params, batch, steps=10):
    """``steps`` jitted steps of ``optimizer`` on ``_loss`` (grads over the whole tree)."""

    @jax.jit
    def step(p, s):
        g = jax.grad(_loss)(p, *batch)
        u, s = optimizer.update(g, s, p)
        return optax.apply_updates(p, u), s

    state = optimizer.init(params)
    for _ in range(steps):
        params, state = jax.block_until_ready(step(params, state))
    return params, state


def _bits(a):
    return np.asarray(a).view(np.uint32)


# -- optimizer: freezing, lr multiplier, weight-decay mask --------------------------------------


def test_frozen_subtree_is_bit_identical_and_the_rest_trains_as_plain_optax(params, batch):
    """10 AdamW steps with weight decay and a global-norm clip: the frozen encoder keeps every
    bit and gets no optimizer state; the trainable params equal plain optax run on them alone
    (so the clip measured only trainable gradients)."""
    rules = Rules(Rule("encoder/*", trainable=False), Rule("*/b", weight_decay=False))
    inner = optax.chain(
        optax.clip_by_global_norm(0.05),
        optax.adamw(0.05, weight_decay=0.3, mask=rules.weight_decay_mask),
    )
    trained, state = _train(rules.optimizer(inner), params, batch)
    for name in ("w", "b"):
        np.testing.assert_array_equal(
            _bits(trained["encoder"][name]), _bits(params["encoder"][name])
        )
    # The frozen params have no Adam moments (they are MaskedNode placeholders).
    assert all(leaf.shape != (5, 8) for leaf in jax.tree.leaves(state))

    # Reference: plain optax on the trainable subtree only, the encoder a constant.
    frozen = params["encoder"]
    rest = {k: v for k, v in params.items() if k != "encoder"}
    mask = {"norm": {"b": False, "scale": True}, "head": {"b": False, "w": True}}
    ref_opt = optax.chain(
        optax.clip_by_global_norm(0.05), optax.adamw(0.05, weight_decay=0.3, mask=mask)
    )

    @jax.jit
    def ref_step(p, s):
        g = jax.grad(lambda q: _loss({"encoder": frozen, **q}, *batch))(p)
        u, s = ref_opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    ref, ref_state = rest, ref_opt.init(rest)
    for _ in range(10):
        ref, ref_state = jax.block_until_ready(ref_step(ref, ref_state))
    for layer in ("norm", "head"):
        for name, value in ref[layer].items():
            assert not np.allclose(value, params[layer][name])  # it did train
            np.testing.assert_allclose(trained[layer][name], value, rtol=1e-6, atol=1e-7)


def test_lr_scale_scales_sgd_updates_exactly(params):
    """SGD's update is -lr * g; with the rules it is -lr * g * lr_scale, bit for bit."""
    rng = np.random.default_rng(3)
    grads = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(np.float32), params)
    rules = Rules(Rule("head/*", lr_scale=0.5), Rule("norm/scale", lr_scale=2.0))
    opt = rules.optimizer(optax.sgd(0.1))
    updates, _ = opt.update(grads, opt.init(params), params)
    scale = {"head/w": 0.5, "head/b": 0.5, "norm/scale": 2.0}
    for layer, leaves in updates.items():
        for name, u in leaves.items():
            g = grads[layer][name]
            want = (-np.float32(0.1) * g) * np.float32(scale.get(f"{layer}/{name}", 1.0))
            np.testing.assert_array_equal(u, want)


def test_lr_scale_scales_adamw_updates_exactly(params):
    """Over 3 steps with different gradients, the scaled subtree's AdamW updates (decay
    included) are exactly 0.5 x those of the same optimizer without rules; others equal."""
    rules = Rules(Rule("head/*", lr_scale=0.5))
    plain = optax.adamw(0.01, weight_decay=0.1)
    scaled = rules.optimizer(optax.adamw(0.01, weight_decay=0.1))
    s_plain, s_scaled = plain.init(params), scaled.init(params)
    plain_update, scaled_update = jax.jit(plain.update), jax.jit(scaled.update)
    rng = np.random.default_rng(2)
    for _ in range(3):
        g = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype), params)
        u_plain, s_plain = plain_update(g, s_plain, params)
        u_scaled, s_scaled = scaled_update(g, s_scaled, params)
        for layer in params:
            factor = np.float32(0.5 if layer == "head" else 1.0)
            for name in params[layer]:
                want = np.asarray(u_plain[layer][name]) * factor
                np.testing.assert_array_equal(u_scaled[layer][name], want)


def test_weight_decay_mask_matches_hand_computed_adamw_decay(params):
    """With zero gradients AdamW's update is exactly -lr * wd * p where decayed, 0 elsewhere."""
    rules = Rules(Rule("*/b", weight_decay=False), Rule("*norm*", weight_decay=False))
    assert rules.weight_decay_mask(params) == {
        "encoder": {"b": False, "w": True},
        "norm": {"b": False, "scale": False},
        "head": {"b": False, "w": True},
    }
    lr, wd = 0.1, 0.01
    opt = rules.optimizer(optax.adamw(lr, weight_decay=wd, mask=rules.weight_decay_mask))
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zeros, opt.init(params), params)
    for layer in params:
        for name, p in params[layer].items():
            decayed = name == "w"
            want = -lr * wd * np.asarray(p, np.float64) if decayed else np.zeros(p.shape)
            np.testing.assert_allclose(updates[layer][name], want, rtol=1e-6, atol=0)


# -- resolution: precedence, report, errors ----------------------------------------------------


def test_first_matching_rule_decides_each_setting(params):
    rules = Rules(
        Rule("encoder/w", lr_scale=2.0),
        Rule("encoder/*", lr_scale=3.0, trainable=False),
        Rule("*", weight_decay=False, lr_scale=5.0),
    )
    r = rules.resolve(params)
    assert list(r) == ["encoder/b", "encoder/w", "head/b", "head/w", "norm/b", "norm/scale"]
    got = {path: (x.lr_scale, x.trainable, x.weight_decay, dict(x.rule)) for path, x in r.items()}
    base = {"sharding": None, "dtype": None, "compute_dtype": None}
    assert got["encoder/w"] == (
        2.0,
        False,
        False,
        {**base, "lr_scale": 0, "trainable": 1, "weight_decay": 2},
    )
    assert got["encoder/b"] == (
        3.0,
        False,
        False,
        {**base, "lr_scale": 1, "trainable": 1, "weight_decay": 2},
    )
    assert got["head/w"] == (
        5.0,
        True,
        False,
        {**base, "lr_scale": 2, "trainable": None, "weight_decay": 2},
    )
    assert rules.lr_scales(params)["encoder"] == {"w": 2.0, "b": 3.0}
    assert rules.trainable_mask(params)["head"] == {"w": True, "b": True}


def test_report_lists_every_param_with_the_rule_behind_each_setting(params):
    rules = Rules(
        Rule("encoder/*", trainable=False),
        Rule("encoder/w", sharding=P(None, "fsdp")),
        Rule("*/w", sharding=P(("data", "fsdp")), dtype=jnp.bfloat16),
        Rule("*norm*", weight_decay=False, compute_dtype="float32"),
        Rule("head", remat="dots_saveable"),
    )
    lines = rules.report(params, MESH_2x4).splitlines()
    assert lines[:7] == [
        "rules:",
        "  #0 'encoder/*': trainable=False",
        "  #1 'encoder/w': sharding=P(None, 'fsdp')",
        "  #2 '*/w': sharding=P(('data', 'fsdp'),), dtype=bfloat16",
        "  #3 '*norm*': compute_dtype=float32, weight_decay=False",
        "  #4 'head': remat='dots_saveable'",
        "mesh: data=2, fsdp=4",
    ]
    assert lines[7].split() == [
        "path", "shape", "sharding", "dtype", "compute", "trainable", "weight_decay",
        "lr_scale", "shard",
    ]  # fmt: skip
    rows = {line.split()[0]: " ".join(line.split()) for line in lines[8:14]}
    assert rows == {
        "encoder/b": "encoder/b (8,) P() float32 - False #0 True 1.0 (8,)",
        "encoder/w": "encoder/w (5, 8) P(None, 'fsdp') #1 bfloat16 #2 - False #0 True 1.0 (5, 2)",
        "head/b": "head/b (3,) P() float32 - True True 1.0 (3,)",
        "head/w": "head/w (8, 3) P(('data', 'fsdp'),) #2 bfloat16 #2 - True True 1.0 (1, 3)",
        "norm/b": "norm/b (8,) P() float32 float32 #3 True False #3 1.0 (8,)",
        "norm/scale": "norm/scale (8,) P() float32 float32 #3 True False #3 1.0 (8,)",
    }
    assert lines[14:] == ["remat:", "  head: dots_saveable"]


def test_a_rule_that_matches_nothing_raises_naming_its_pattern(params):
    with pytest.raises(ConfigError, match=r"rule #1 'decoder/\*' matches no parameter path"):
        Rules(Rule("*/w", lr_scale=0.5), Rule("decoder/*", trainable=False)).resolve(params)
    # A layer path is not a param path: the message says how to reach its params.
    with pytest.raises(ConfigError, match=r"'encoder' matches no parameter.*write 'encoder/\*'"):
        Rules(Rule("encoder", trainable=False)).trainable_mask(params)
    # A remat rule is matched against layer paths, and a param path is not one.
    with pytest.raises(ConfigError, match=r"'\*/w' matches no layer path; layer paths: encoder"):
        Rules(Rule("*/w", remat="nothing_saveable")).remat_paths(params)
    # Every entry point checks, the optimizer's too (at init, on the real tree).
    with pytest.raises(ConfigError, match="'typo/w'"):
        Rules(Rule("typo/w", lr_scale=2.0)).optimizer(optax.sgd(0.1)).init(params)


def test_require_coverage_names_the_uncovered_param(params):
    partial = (Rule("encoder/*", trainable=False), Rule("head/*", lr_scale=0.5))
    with pytest.raises(ConfigError, match=r"parameter 'norm/b' is matched by no rule"):
        Rules(*partial, require_coverage=True).resolve(params)
    Rules(*partial).resolve(params)  # without coverage the norm takes the defaults
    # A remat rule covers layers, not params.
    with pytest.raises(ConfigError, match=r"parameter 'norm/b' is matched by no rule"):
        Rules(*partial, Rule("*", remat="dots_saveable"), require_coverage=True).resolve(params)
    covered = Rules(*partial, Rule("norm/*", weight_decay=False), require_coverage=True)
    assert set(covered.resolve(params)) == {f"{k}/{n}" for k in params for n in params[k]}


def test_a_mesh_axis_that_does_not_divide_a_dimension_raises_naming_path_dim_and_size(params):
    rules = Rules(Rule("encoder/w", sharding=P("fsdp", None)))  # (5, 8): 5 % 4 != 0
    msg = r"'encoder/w' of shape \(5, 8\): dimension 0 has size 5, which mesh axis fsdp of size 4"
    with pytest.raises(ShardingError, match=msg):
        rules.shardings(params, MESH_2x4)
    with pytest.raises(ShardingError, match=msg):
        rules.report(params, MESH_2x4)
    # Two axes on one dimension: their product (8) must divide it.
    with pytest.raises(ShardingError, match=r"dimension 1 has size 3, which mesh axis data"):
        Rules(Rule("head/w", sharding=P(None, ("data", "fsdp")))).shardings(params, MESH_2x4)
    ok = Rules(Rule("encoder/w", sharding=P(None, ("data", "fsdp")))).shardings(params, MESH_2x4)
    assert ok["encoder"]["w"] == NamedSharding(MESH_2x4, P(None, ("data", "fsdp")))
    assert ok["head"]["w"] == NamedSharding(MESH_2x4, P())  # the default: replicated


def test_unknown_mesh_axis_and_spec_longer_than_rank_raise(params):
    with pytest.raises(ShardingError, match=r"'head/w'.*mesh has no axis 'model' \(its axes"):
        Rules(Rule("head/w", sharding=P("model"))).shardings(params, MESH_2x4)
    too_long = Rules(Rule("*/b", sharding=P(None, "data")))
    with pytest.raises(ShardingError, match=r"'encoder/b' of shape \(8,\) \(rank 1\)"):
        too_long.partition_specs(params)
    assert issubclass(ShardingError, ConfigError)


def test_opt_state_shardings_give_param_specs_to_moments_and_replicate_counts(params):
    rules = Rules(
        Rule("encoder/w", sharding=P(None, "fsdp")),
        Rule("head/w", sharding=P("data", None)),
        Rule("encoder/*", trainable=False),
    )
    specs = rules.partition_specs(params)
    spec_of = lambda sharding: sharding.spec  # noqa: E731

    state = jax.eval_shape(optax.adamw(1e-3).init, params)
    placed = rules.opt_state_shardings(state, params, MESH_2x4)
    adam = placed[0]
    assert adam.count.spec == P()
    assert jax.tree.map(spec_of, adam.mu) == specs == jax.tree.map(spec_of, adam.nu)

    # A multi_transform state (frozen params hold MaskedNode placeholders, no moments).
    state = jax.eval_shape(rules.optimizer(optax.adam(1e-3)).init, params)
    placed = rules.opt_state_shardings(state, params, MESH_2x4)
    adam = placed.inner_states["train"].inner_state[0][0]
    assert adam.count.spec == P()
    assert adam.mu["head"]["w"].spec == P("data", None) == adam.nu["head"]["w"].spec
    assert adam.mu["norm"]["scale"].spec == P()
    assert isinstance(adam.mu["encoder"]["w"], optax.MaskedNode)
    # Same structure as the state, so it can be given to jax.jit / jax.device_put.
    assert jax.tree.structure(placed) == jax.tree.structure(state)


def test_opt_state_shardings_pick_the_longest_matching_key_path():
    params = {"w": jnp.zeros((4, 4)), "inner": {"w": jnp.zeros((4, 4))}}
    rules = Rules(Rule("w", sharding=P("data")), Rule("inner/w", sharding=P(None, "fsdp")))
    placed = rules.opt_state_shardings(jax.eval_shape(optax.sgd(0.1, 0.9).init, params), params,
                                       MESH_2x4)  # fmt: skip
    trace = placed[0].trace
    assert trace["w"].spec == P("data") and trace["inner"]["w"].spec == P(None, "fsdp")


def test_cast_and_compute_dtypes_follow_the_rules_for_float_params():
    params = {"dense": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}, "ids": jnp.arange(3)}
    rules = Rules(Rule("*/w", dtype="bfloat16"), Rule("*", compute_dtype=jnp.float16))
    cast = rules.cast(params)
    assert jax.tree.map(lambda a: a.dtype.name, cast) == {
        "dense": {"w": "bfloat16", "b": "float32"},
        "ids": "int32",  # integer params keep their dtype
    }
    assert cast["ids"] is params["ids"]
    np.testing.assert_array_equal(np.asarray(cast["dense"]["w"], np.float32), np.ones((2, 2)))
    dtypes = rules.compute_dtypes(params)
    assert dtypes["dense"] == {"w": np.dtype("float16"), "b": np.dtype("float16")}
    assert dtypes["ids"] is None


def test_remat_paths_list_each_matching_layer_with_its_first_remat_rule():
    leaf = jnp.zeros(2)
    params = {
        "blocks": {"0": {"attn": {"w": leaf}, "mlp": {"w": leaf}}, "1": {"mlp": {"w": leaf}}},
        "head": {"w": leaf},
    }
    rules = Rules(
        Rule("head/*", trainable=False),  # a param rule: not a remat rule
        Rule("blocks/0/attn", remat="everything_saveable"),
        Rule("blocks/?", remat="nothing_saveable"),
        Rule("*", remat="dots_saveable", lr_scale=0.5),
    )
    assert rules.remat_paths(params) == {
        "blocks": "dots_saveable",
        "blocks/0": "nothing_saveable",
        "blocks/0/attn": "everything_saveable",
        "blocks/0/mlp": "dots_saveable",
        "blocks/1": "nothing_saveable",
        "blocks/1/mlp": "dots_saveable",
        "head": "dots_saveable",
    }


def test_rule_validation_and_hashability():
    with pytest.raises(ConfigError, match="sets nothing"):
        Rule("*")
    with pytest.raises(ConfigError, match=r"sharding must be a jax\.sharding\.PartitionSpec"):
        Rule("*", sharding=("data",))
    with pytest.raises(ShardingError, match="uses mesh axis 'data' twice"):
        Rule("*", sharding=P("data", "data"))
    with pytest.raises(ConfigError, match=r"remat: policy must be one of nothing_saveable, "):
        Rule("*", remat="save_everything")
    with pytest.raises(ConfigError, match="lr_scale must be finite and >= 0"):
        Rule("*", lr_scale=-1.0)
    with pytest.raises(ConfigError, match="dtype must be a floating dtype"):
        Rule("*", dtype="int8")
    with pytest.raises(ConfigError, match="trainable must be True, False or None"):
        Rule("*", trainable=0)
    assert Rule("*", dtype="bfloat16") == Rule("*", dtype=jnp.bfloat16)
    table = Rules(Rule("*", sharding=P("data")), require_coverage=True)
    assert hash(table) == hash(Rules(Rule("*", sharding=P("data")), require_coverage=True))


_CHILD = """
import functools, json
import jax, jax.numpy as jnp, optax
from jax.sharding import PartitionSpec as P
from nn_jax.rules import Rule, Rules

# Auto axes: XLA propagates shardings through the step (jax.make_mesh defaults to Explicit).
mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
params = {"enc": {"w": jnp.arange(64.0).reshape(8, 8), "b": jnp.ones(8)},
          "head": {"w": jnp.ones((8, 4)), "b": jnp.ones(4)}}
rules = Rules(Rule("enc/w", sharding=P("data", "fsdp")), Rule("head/w", sharding=P("fsdp")),
              Rule("*/b", weight_decay=False), Rule("enc/b", trainable=False))
param_sh = rules.shardings(params, mesh)
placed = jax.device_put(params, param_sh)
opt = rules.optimizer(optax.adamw(0.1, weight_decay=0.1, mask=rules.weight_decay_mask))
state_sh = rules.opt_state_shardings(jax.eval_shape(opt.init, params), params, mesh)
state = jax.jit(opt.init, out_shardings=state_sh)(placed)
shards = lambda t: jax.tree.map(lambda a: [list(s.data.shape) for s in a.addressable_shards], t)
adam = state.inner_states["train"].inner_state[0][0]
mu, count = shards(adam.mu), shards(adam.count)

@functools.partial(jax.jit, out_shardings=(param_sh, state_sh))
def step(p, s):
    loss = lambda q: jnp.sum(jnp.tanh(q["enc"]["w"] @ q["head"]["w"])) + q["enc"]["b"].sum()
    g = jax.grad(loss)(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

for _ in range(2):
    placed, state = jax.block_until_ready(step(placed, state))
print(json.dumps({"devices": jax.device_count(), "params": shards(placed), "mu": mu,
                  "count": count, "enc_b": placed["enc"]["b"].tolist()}))
"""


def test_shardings_place_real_shards_on_eight_devices():
    """In a child with 8 simulated CPU devices: device_put with the returned shardings gives the
    per-device shard shapes the specs imply, the optimizer state follows, and a jitted step
    keeps the frozen param unchanged."""
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    assert out["params"]["enc"]["w"] == [[4, 2]] * 8  # (8, 8) over data=2 x fsdp=4
    assert out["params"]["head"]["w"] == [[2, 4]] * 8  # (8, 4) rows over fsdp=4
    assert out["params"]["enc"]["b"] == [[8]] * 8  # replicated
    assert out["mu"]["enc"]["w"] == [[4, 2]] * 8 and out["mu"]["head"]["w"] == [[2, 4]] * 8
    assert out["count"] == [[]] * 8
    assert out["mu"]["enc"]["b"] == []  # frozen: a MaskedNode, no moments
    assert out["enc_b"] == [1.0] * 8
