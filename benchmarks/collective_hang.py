"""The collective-hang trap: back-to-back jitted steps with an all-reduce on simulated CPU devices.

With ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` one CPU process pretends to be N
devices. A data-parallel step (params replicated, batch sharded over a ``"data"`` axis) ends in
an all-reduce of the gradients; dispatched back to back without waiting (JAX's default
asynchronous dispatch), such steps can stop forever inside the all-reduce: XLA's CPU
rendezvous logs ``This thread has been waiting for `all reduce RendezvousKey{...}` for 20
seconds and may be stuck`` and the process never finishes. What decides it is how many steps
are in flight: blocking (``jax.block_until_ready``) on every step's, every 10th's or every
25th's result avoided it in every run recorded here; 50 or more steps in flight mostly hung.

Each variant runs in its own child process (its own ``XLA_FLAGS``, ``JAX_PLATFORMS=cpu``) with a
wall-clock timeout, and is reported ``finished`` or ``hung`` (killed at the timeout):

* devices: 2, 4, 8 simulated CPU devices;
* step: ``grad`` (``jax.jit`` of a small MLP's loss and SGD update on a batch sharded over the
  mesh: the all-reduce comes from sharding propagation, as in ``nn_jax.train.make_step`` on
  sharded inputs) or ``psum`` (an explicit ``lax.pmean``, a psum, inside ``jax.shard_map``);
* sync: ``none`` (dispatch every step at once, block at the end), ``every_K`` (block on every
  K-th step's loss: at most K steps in flight), ``every_step`` (block on each step's loss).

Run ``python benchmarks/collective_hang.py [--repeats 3] [--steps 200] [--timeout 40]
[--devices 2,4,8] [--syncs none,every_10] [--append]``; it prints a table and writes
``benchmarks/results/collective_hang.json`` (every run, with the 1-minute load average and the
CPU count, since the outcome depends on how busy the cores are; ``--append`` adds to the runs
already recorded there, and the summary counts them all).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DEVICES = (2, 4, 8)
STEPS = ("grad", "psum")
SYNCS = ("none", "every_50", "every_25", "every_10", "every_step")


def child(devices: int, step_kind: str, sync: str, steps: int) -> None:
    """Run ``steps`` back-to-back steps on ``devices`` simulated CPU devices; print ``done``.

    Called in a fresh process whose ``XLA_FLAGS`` the parent set (jax reads them on import).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    assert jax.device_count() == devices, jax.devices()
    mesh = jax.make_mesh((devices,), ("data",))
    replicated, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    rng = np.random.default_rng(0)
    params = jax.device_put(
        {
            "w1": rng.normal(0, 0.3, (16, 32)).astype(np.float32),
            "w2": rng.normal(0, 0.3, (32, 1)).astype(np.float32),
        },
        replicated,
    )
    x = jax.device_put(rng.normal(size=(8 * devices, 16)).astype(np.float32), rows)
    y = jax.device_put(rng.normal(size=(8 * devices, 1)).astype(np.float32), rows)

    def loss_fn(p: dict, x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] - y) ** 2)

    if step_kind == "grad":

        @jax.jit
        def step(p: dict, x: jax.Array, y: jax.Array) -> tuple[dict, jax.Array]:
            loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
            return jax.tree.map(lambda a, g: a - 0.01 * g, p, grads), loss

    else:

        def local(p: dict, x: jax.Array, y: jax.Array) -> tuple[dict, jax.Array]:
            loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
            grads, loss = jax.lax.pmean((grads, loss), "data")
            return jax.tree.map(lambda a, g: a - 0.01 * g, p, grads), loss

        step = jax.jit(
            jax.shard_map(
                local, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P(), P())
            )
        )

    every = {"every_step": 1, "none": steps}.get(sync) or int(sync.removeprefix("every_"))
    start = time.perf_counter()
    for i in range(steps):
        params, loss = step(params, x, y)
        if (i + 1) % every == 0:
            jax.block_until_ready(loss)
    jax.block_until_ready((params, loss))
    print(json.dumps({"done": True, "seconds": time.perf_counter() - start, "loss": float(loss)}))


def run_variant(devices: int, step_kind: str, sync: str, steps: int, timeout: float) -> dict:
    """One child run of a variant: ``{"outcome": "finished" | "hung" | "failed", ...}``."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }
    cmd = [sys.executable, __file__, "--child", str(devices), step_kind, sync, str(steps)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    # A session of its own, so a hung child (and anything it started) is killed as a group.
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        outcome = "hung"
    else:
        outcome = "finished" if proc.returncode == 0 and '"done"' in out else "failed"
    record = {
        "devices": devices,
        "step": step_kind,
        "sync": sync,
        "outcome": outcome,
        "wall_s": round(time.perf_counter() - start, 2),
        "load_avg_1min": round(load, 2),
        "rendezvous_stuck_warning": "may be stuck" in err,
    }
    if outcome == "failed":
        record["stderr_tail"] = err[-2000:]
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=40.0)
    parser.add_argument("--devices", default=",".join(map(str, DEVICES)))
    parser.add_argument("--syncs", default=",".join(SYNCS))
    parser.add_argument("--append", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "collective_hang.json"))
    args = parser.parse_args()
    devices = [int(d) for d in args.devices.split(",")]
    syncs = args.syncs.split(",")
    out = Path(args.out)
    runs = json.loads(out.read_text())["runs"] if args.append and out.exists() else []

    for repeat in range(args.repeats):
        for n in devices:
            for step_kind in STEPS:
                for sync in syncs:
                    record = run_variant(n, step_kind, sync, args.steps, args.timeout)
                    runs.append({"repeat": repeat, "steps": args.steps, **record})
                    print(
                        f"repeat {repeat}  devices {n}  {step_kind:4}  sync {sync:10}  "
                        f"{record['outcome']:8}  {record['wall_s']:6.1f} s  "
                        f"load {record['load_avg_1min']}",
                        flush=True,
                    )
    outcomes: dict[str, list[str]] = {}
    for r in runs:
        name = f"devices={r['devices']} step={r['step']} sync={r['sync']} steps={r['steps']}"
        outcomes.setdefault(name, []).append(r["outcome"])
    summary = {
        name: f"{seen.count('hung')}/{len(seen)} hung"
        + (f", {seen.count('failed')} failed" if "failed" in seen else "")
        for name, seen in sorted(outcomes.items())
    }
    import jax

    results = {
        "environment": {
            "jax": jax.__version__,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "settings": {"timeout_s": args.timeout},
        "summary": summary,
        "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
