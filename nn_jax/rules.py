"""The rule table: one ordered list of (parameter-path pattern -> settings) that decides, without
touching model code, each parameter's sharding, storage and compute dtype, trainability, weight
decay and learning-rate multiplier, and which layers are rematerialized.

**Paths** are the ``"/"``-joined dict keys of the params tree (``"encoder/0/w"``); a pattern is
``fnmatch`` syntax over them, where ``*`` crosses ``/`` (``"encoder/*"``, ``"*/b"``, ``"*"``).
A remat rule is matched against *layer* paths instead: the paths of the params tree's inner
dicts (``"encoder/0"``).

**Precedence, per setting**: for each setting, the first rule (in order) that matches the path
and sets that setting decides it. So a specific rule goes before a catch-all, and two rules can
each decide a different setting of the same parameter. A setting no rule sets takes its
default: replicated (``P()``), the param's own dtype, no compute cast, no remat, trainable,
weight decay on, learning-rate multiplier 1.0.

**Never a silent fallback**: a rule that matches nothing is a ConfigError naming its pattern;
with ``require_coverage=True`` a parameter that no rule matches is a ConfigError naming its
path; a sharding that does not fit (a mesh axis the mesh lacks, a spec longer than the
parameter's rank, mesh axes whose size does not divide the dimension they shard) is a
ShardingError naming the path, the dimension and the sizes.

Built on the ecosystem: shardings are ``jax.sharding.NamedSharding`` s of ``PartitionSpec`` s,
remat policies are ``jax.checkpoint_policies`` names, and :meth:`Rules.optimizer` is
``optax.multi_transform`` plus a per-leaf scale.

>>> import jax.numpy as jnp, optax
>>> from jax.sharding import PartitionSpec as P
>>> params = {"encoder": {"w": jnp.zeros((4, 8)), "b": jnp.zeros(8)},
...           "head": {"w": jnp.zeros((8, 2)), "b": jnp.zeros(2)}}
>>> rules = Rules(
...     Rule("encoder/*", trainable=False),
...     Rule("*/b", weight_decay=False),
...     Rule("*/w", sharding=P(None, "model"), lr_scale=0.5),
... )
>>> print(rules.report(params))
rules:
  #0 'encoder/*': trainable=False
  #1 '*/b': weight_decay=False
  #2 '*/w': sharding=P(None, 'model'), lr_scale=0.5
path       shape   sharding             dtype    compute  trainable  weight_decay  lr_scale
encoder/b  (8,)    P()                  float32  -        False #0   False #1      1.0
encoder/w  (4, 8)  P(None, 'model') #2  float32  -        False #0   True          0.5 #2
head/b     (2,)    P()                  float32  -        True       False #1      1.0
head/w     (8, 2)  P(None, 'model') #2  float32  -        True       True          0.5 #2
>>> opt = rules.optimizer(optax.adamw(1e-3, weight_decay=0.1, mask=rules.weight_decay_mask))
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AbstractMesh, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nn_jax._options import floating_dtype
from nn_jax.errors import ArgumentError, ConfigError, ParamsError, ShardingError
from nn_jax.remat import checkpoint_policy

__all__ = ["Resolved", "Rule", "Rules"]

PyTree: TypeAlias = Any
AnyMesh: TypeAlias = Mesh | AbstractMesh

# The per-parameter settings and their defaults (remat is per layer, handled apart).
_DEFAULTS: dict[str, Any] = {
    "sharding": P(),
    "dtype": None,
    "compute_dtype": None,
    "trainable": True,
    "weight_decay": True,
    "lr_scale": 1.0,
}


@dataclasses.dataclass(frozen=True)
class Rule:
    """Settings for the parameters whose path matches ``pattern``; ``None`` leaves a setting to
    a later rule or to its default.

    Args:
        pattern: ``fnmatch`` pattern over the ``"/"``-joined param path (``*`` crosses ``/``).
        sharding: ``PartitionSpec`` over mesh axis names, one entry per leading dimension.
        dtype: storage dtype of floating params (:meth:`Rules.cast`).
        compute_dtype: dtype floating params are cast to for the forward pass.
        remat: a ``jax.checkpoint_policies`` name (:data:`nn_jax.remat.REMAT_POLICIES`) for the
            *layers* whose path matches (:meth:`Rules.remat_paths`).
        trainable: ``False`` freezes the params: no update at all, not even weight decay.
        weight_decay: ``False`` excludes the params from the optimizer's weight decay.
        lr_scale: learning-rate multiplier (>= 0) applied to the params' updates.
    """

    pattern: str
    sharding: P | None = None
    dtype: Any = None
    compute_dtype: Any = None
    remat: str | None = None
    trainable: bool | None = None
    weight_decay: bool | None = None
    lr_scale: float | None = None

    def __post_init__(self) -> None:
        where = f"Rule({self.pattern!r})"
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ConfigError(
                f"Rule: pattern must be a non-empty string (fnmatch over the '/'-joined param "
                f"path), given {self.pattern!r}"
            )
        if self.sharding is not None:
            _check_spec_entries(where, self.sharding)
        for name in ("dtype", "compute_dtype"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, floating_dtype(where, name, value))
        if self.remat is not None:
            checkpoint_policy(self.remat, f"{where}: remat")
        for name in ("trainable", "weight_decay"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"{where}: {name} must be True, False or None, given {value!r}")
        if self.lr_scale is not None:
            scale = self.lr_scale
            if isinstance(scale, bool) or not isinstance(scale, int | float):
                raise ConfigError(f"{where}: lr_scale must be a number, given {scale!r}")
            if not (math.isfinite(scale) and scale >= 0):
                raise ConfigError(f"{where}: lr_scale must be finite and >= 0, given {scale}")
            object.__setattr__(self, "lr_scale", float(scale))
        if not self.settings():
            raise ConfigError(
                f"{where} sets nothing: give at least one of sharding, dtype, compute_dtype, "
                f"remat, trainable, weight_decay, lr_scale"
            )

    def settings(self) -> dict[str, Any]:
        """The settings this rule sets (those not ``None``), by name."""
        fields = (f.name for f in dataclasses.fields(self) if f.name != "pattern")
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}


@dataclasses.dataclass(frozen=True)
class Resolved:
    """What the rule table decided for one parameter, and which rule decided each setting.

    ``rule`` maps each setting name to the index of the rule that set it, or ``None`` where the
    default applies. ``dtype`` is the storage dtype (the param's own unless a rule sets one);
    ``compute_dtype`` is ``None`` when the param is not cast for the forward pass.
    """

    path: str
    shape: tuple[int, ...]
    param_dtype: np.dtype[Any]
    sharding: P
    dtype: np.dtype[Any]
    compute_dtype: np.dtype[Any] | None
    trainable: bool
    weight_decay: bool
    lr_scale: float
    rule: Mapping[str, int | None]


@dataclasses.dataclass(frozen=True, init=False)
class Rules:
    """An ordered, hashable table of :class:`Rule` s; see the module docstring for matching.

    Every method takes the params tree (arrays or ``jax.ShapeDtypeStruct`` s, e.g. from
    ``jax.eval_shape``) and first checks the table against it: a rule that matches nothing, and
    (with ``require_coverage=True``) a param that no rule matches, are ConfigErrors.
    """

    rules: tuple[Rule, ...]
    require_coverage: bool

    def __init__(self, *rules: Rule, require_coverage: bool = False) -> None:
        for i, rule in enumerate(rules):
            if not isinstance(rule, Rule):
                raise ArgumentError(f"Rules: argument {i} must be a Rule, given {rule!r}")
        object.__setattr__(self, "rules", tuple(rules))
        object.__setattr__(self, "require_coverage", bool(require_coverage))

    # -- resolution --------------------------------------------------------------------------

    def resolve(self, params: PyTree) -> dict[str, Resolved]:
        """Each param's settings and the rule behind each, keyed by path (in tree order)."""
        resolved: dict[str, Resolved] = {}
        for path, leaf in self._checked_leaves(params):
            if isinstance(leaf, optax.MaskedNode):
                continue
            shape, own = _shape_dtype(path, leaf)
            values, sources = self._decide(path)
            floating = jnp.issubdtype(own, jnp.floating)
            dtype = values["dtype"] if floating and values["dtype"] is not None else own
            resolved[path] = Resolved(
                path=path,
                shape=shape,
                param_dtype=own,
                sharding=values["sharding"],
                dtype=dtype,
                compute_dtype=values["compute_dtype"] if floating else None,
                trainable=values["trainable"],
                weight_decay=values["weight_decay"],
                lr_scale=values["lr_scale"],
                rule={**sources, **({} if floating else {"dtype": None, "compute_dtype": None})},
            )
        return resolved

    def remat_paths(self, params: PyTree) -> dict[str, str]:
        """Layer path -> ``jax.checkpoint`` policy name, for each layer a remat rule matches.

        Layers are the inner dicts of the params tree (a layer without params has no path
        here). Every matching layer is listed, nested ones too (``"blocks/*"`` also matches
        ``"blocks/0/mlp"``; write ``"blocks/?"`` for the blocks alone): a nested
        ``jax.checkpoint`` is valid, its policy applying inside the outer recomputation. The
        model itself (path ``""``) is never listed: wrap it in ``Remat``.
        """
        paths = [path for path, _ in self._checked_leaves(params)]
        chosen: dict[str, str] = {}
        for layer in _layer_paths(paths):
            for rule in self.rules:
                if rule.remat is not None and fnmatch.fnmatchcase(layer, rule.pattern):
                    chosen[layer] = rule.remat
                    break
        return chosen

    def report(self, params: PyTree, mesh: AnyMesh | None = None) -> str:
        """A printable table: every param's shape and settings, each followed by ``#i``, the
        index of the rule that set it (no mark: the default); with a mesh, the shardings are
        validated and each param's per-device shard shape is shown."""
        resolved = self.resolve(params)
        axes = None if mesh is None else dict(mesh.shape)
        lines = ["rules:"] + [
            f"  #{i} {rule.pattern!r}: "
            + ", ".join(f"{k}={_text(v)}" for k, v in rule.settings().items())
            for i, rule in enumerate(self.rules)
        ]
        if axes is not None:
            lines.append("mesh: " + ", ".join(f"{name}={size}" for name, size in axes.items()))
        header = ["path", "shape", "sharding", "dtype", "compute", "trainable"]
        header += ["weight_decay", "lr_scale"] + ([] if axes is None else ["shard"])
        rows = [header]
        for r in resolved.values():
            row = [r.path, str(r.shape)]
            row += [_cell(getattr(r, name), r.rule[name]) for name in _DEFAULTS]
            if axes is not None:
                row.append(str(_shard_shape(r, axes, self.rules)))
            rows.append(row)
        widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        ]
        remat = self.remat_paths(params)
        if remat:
            lines.append("remat:")
            lines += [f"  {layer}: {policy}" for layer, policy in remat.items()]
        return "\n".join(lines)

    # -- sharding ----------------------------------------------------------------------------

    def partition_specs(self, params: PyTree) -> PyTree:
        """A tree of ``PartitionSpec`` s shaped like ``params`` (checked against each rank)."""
        resolved = self.resolve(params)
        for r in resolved.values():
            _check_fit(r, None, self.rules)
        return self._map(params, lambda path: resolved[path].sharding)

    def shardings(self, params: PyTree, mesh: AnyMesh) -> PyTree:
        """A tree of ``NamedSharding(mesh, spec)`` shaped like ``params``; every spec is checked
        against the mesh (``jax.sharding.Mesh`` or ``AbstractMesh``): its axis names exist, and
        the product of the axis sizes on a dimension divides that dimension."""
        resolved = self.resolve(params)
        axes = dict(mesh.shape)
        for r in resolved.values():
            _check_fit(r, axes, self.rules)
        return self._map(params, lambda path: NamedSharding(mesh, resolved[path].sharding))

    def opt_state_shardings(self, opt_state: PyTree, params: PyTree, mesh: AnyMesh) -> PyTree:
        """Shardings for an optimizer state (concrete, or abstract from
        ``jax.eval_shape(optimizer.init, params)``): a leaf whose key path ends with a param's
        key path and has that param's shape (Adam's ``mu``/``nu``, momentum) gets that param's
        sharding (the longest such key path wins); every other leaf (step counts, scalars,
        factored statistics) is replicated."""
        resolved = self.resolve(params)
        by_key_path = {
            tuple(kp): (resolved[_path(kp)].shape, sharding)
            for kp, sharding in jax.tree_util.tree_leaves_with_path(self.shardings(params, mesh))
        }
        replicated = NamedSharding(mesh, P())

        def place(key_path: tuple[Any, ...], leaf: Any) -> NamedSharding:
            for start in range(len(key_path) + 1):
                found = by_key_path.get(tuple(key_path[start:]))
                if found is not None and found[0] == tuple(np.shape(leaf)):
                    return found[1]
            return replicated

        return jax.tree_util.tree_map_with_path(place, opt_state)

    # -- optimization ------------------------------------------------------------------------

    def trainable_mask(self, params: PyTree) -> PyTree:
        """``True`` where the param is trainable, shaped like ``params``."""
        return self._map(params, lambda path: self._decide(path)[0]["trainable"])

    def weight_decay_mask(self, params: PyTree) -> PyTree:
        """``True`` where weight decay applies; pass the method itself as ``optax.adamw``'s
        ``mask`` (it is called on the trainable subtree, frozen params as ``MaskedNode`` s)."""
        return self._map(params, lambda path: self._decide(path)[0]["weight_decay"])

    def lr_scales(self, params: PyTree) -> PyTree:
        """Each param's learning-rate multiplier (a Python float), shaped like ``params``."""
        return self._map(params, lambda path: self._decide(path)[0]["lr_scale"])

    def optimizer(self, optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
        """``optimizer`` restricted to the trainable params, its updates scaled per param.

        Built as ``optax.multi_transform`` over the labels ``"train"`` and ``"frozen"``: frozen
        params go to ``optax.set_to_zero()`` (zero update, no optimizer state, no weight
        decay); the trainable ones to ``optax.chain(optimizer, scale)``, where ``scale``
        multiplies each update by its ``lr_scale`` (so it scales decoupled weight decay too, as
        a learning rate does). ``optimizer`` never sees frozen params, so a global-norm clip
        inside it measures the trainable params only. The weight-decay mask goes to the
        wrapped optimizer itself::

            rules.optimizer(optax.adamw(lr, weight_decay=wd, mask=rules.weight_decay_mask))

        ``lr_scale=0`` is not freezing (optimizer state still moves): use ``trainable=False``.
        """

        def labels(params: PyTree) -> PyTree:
            return self._map(
                params, lambda path: "train" if self._decide(path)[0]["trainable"] else "frozen"
            )

        train = optax.chain(optimizer, _scale_each(self.lr_scales))
        return optax.multi_transform({"train": train, "frozen": optax.set_to_zero()}, labels)

    # -- precision ---------------------------------------------------------------------------

    def cast(self, params: PyTree) -> PyTree:
        """``params`` (arrays) with each floating param in its storage dtype (others unchanged)."""
        resolved = self.resolve(params)

        def to_storage(key_path: tuple[Any, ...], leaf: Any) -> Any:
            if _is_masked(leaf):
                return leaf
            dtype = resolved[_path(key_path)].dtype
            return leaf if leaf.dtype == dtype else leaf.astype(dtype)

        return jax.tree_util.tree_map_with_path(to_storage, params, is_leaf=_is_masked)

    def compute_dtypes(self, params: PyTree) -> PyTree:
        """Each param's compute dtype, or ``None`` where no rule sets one (or not floating)."""
        resolved = self.resolve(params)
        return self._map(params, lambda path: resolved[path].compute_dtype)

    # -- internals ---------------------------------------------------------------------------

    def _decide(self, path: str) -> tuple[dict[str, Any], dict[str, int | None]]:
        """The settings of one param path, and the index of the rule behind each."""
        values = dict(_DEFAULTS)
        sources: dict[str, int | None] = dict.fromkeys(_DEFAULTS)
        for i, rule in enumerate(self.rules):
            if not fnmatch.fnmatchcase(path, rule.pattern):
                continue
            for name in _DEFAULTS:
                value = getattr(rule, name)
                if value is not None and sources[name] is None:
                    values[name], sources[name] = value, i
        return values, sources

    def _checked_leaves(self, params: PyTree) -> list[tuple[str, Any]]:
        """``(path, leaf)`` pairs of ``params`` (``MaskedNode`` placeholders included: they
        stand for real params), after checking that every rule matches something and, with
        ``require_coverage``, that every param is matched."""
        leaves = [
            (_path(kp), leaf)
            for kp, leaf in jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_masked)[0]
        ]
        paths = [path for path, _ in leaves]
        layers = _layer_paths(paths)
        per_param = [r for r in self.rules if any(name in _DEFAULTS for name in r.settings())]
        for i, rule in enumerate(self.rules):
            hits = rule in per_param and any(fnmatch.fnmatchcase(p, rule.pattern) for p in paths)
            hits = hits or (
                rule.remat is not None and any(fnmatch.fnmatchcase(p, rule.pattern) for p in layers)
            )
            if not hits:
                raise ConfigError(_unmatched(i, rule, paths, layers))
        if self.require_coverage:
            for path in paths:
                if not any(fnmatch.fnmatchcase(path, rule.pattern) for rule in per_param):
                    raise ConfigError(
                        f"Rules: parameter {path!r} is matched by no rule and "
                        f"require_coverage=True; add a rule for it (Rule({path!r}, ...)) "
                        f"or a catch-all Rule('*', ...) at the end"
                    )
        return leaves

    def _map(self, params: PyTree, fn: Callable[[str], Any]) -> PyTree:
        """``fn(path)`` for each param of the checked ``params`` (``MaskedNode`` s kept)."""
        self._checked_leaves(params)
        return jax.tree_util.tree_map_with_path(
            lambda kp, leaf: leaf if _is_masked(leaf) else fn(_path(kp)),
            params,
            is_leaf=_is_masked,
        )


def _scale_each(scales: Callable[[PyTree], PyTree]) -> optax.GradientTransformation:
    """Multiply each update by its own factor, ``scales(updates)`` (stateless)."""

    def init(params: PyTree) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update(
        updates: PyTree, state: optax.EmptyState, params: PyTree = None
    ) -> tuple[PyTree, optax.EmptyState]:
        del params
        factors = scales(updates)
        return jax.tree.map(lambda u, s: u if s == 1.0 else u * s, updates, factors), state

    return optax.GradientTransformation(init, update)


def _is_masked(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def _path(key_path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(key_path, simple=True, separator="/")


def _layer_paths(paths: list[str]) -> list[str]:
    """The inner-dict (layer) paths above the given param paths, in first-seen order."""
    layers: dict[str, None] = {}
    for path in paths:
        parts = path.split("/")
        for end in range(1, len(parts)):
            layers.setdefault("/".join(parts[:end]))
    return list(layers)


def _shape_dtype(path: str, leaf: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
    if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
        raise ParamsError(
            f"Rules: the param at {path!r} is a {type(leaf).__name__}, expected an array or "
            f"a jax.ShapeDtypeStruct"
        )
    return tuple(leaf.shape), np.dtype(leaf.dtype)


def _axis_names(entry: Any) -> tuple[str, ...]:
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def _check_spec_entries(where: str, spec: Any) -> None:
    if not isinstance(spec, P):
        raise ConfigError(
            f"{where}: sharding must be a jax.sharding.PartitionSpec, e.g. P('data', None), "
            f"given {spec!r}"
        )
    seen: set[str] = set()
    for entry in spec:
        ok = entry is None or isinstance(entry, str)
        ok = ok or (isinstance(entry, tuple) and all(isinstance(n, str) for n in entry))
        if not ok:
            raise ConfigError(
                f"{where}: sharding {spec} entries must be None, a mesh axis name or a tuple "
                f"of names, given {entry!r}"
            )
        for name in _axis_names(entry):
            if name in seen:
                raise ShardingError(f"{where}: sharding {spec} uses mesh axis {name!r} twice")
            seen.add(name)


def _check_fit(r: Resolved, axes: Mapping[str, int] | None, rules: tuple[Rule, ...]) -> None:
    """ShardingError unless ``r.sharding`` fits the param's rank and (given) the mesh axes."""
    spec, source = r.sharding, r.rule["sharding"]
    by = "the default" if source is None else f"rule #{source} {rules[source].pattern!r}"
    if len(spec) > len(r.shape):
        raise ShardingError(
            f"Rules: param {r.path!r} of shape {r.shape} (rank {len(r.shape)}) gets sharding "
            f"{spec} from {by}, which names {len(spec)} dimensions"
        )
    if axes is None:
        return
    for dim, entry in enumerate(spec):
        names = _axis_names(entry)
        unknown = [n for n in names if n not in axes]
        if unknown:
            raise ShardingError(
                f"Rules: param {r.path!r} gets sharding {spec} from {by}, but the mesh has no "
                f"axis {unknown[0]!r} (its axes: {', '.join(map(repr, axes))})"
            )
        size = math.prod(axes[n] for n in names)
        if r.shape[dim] % size:
            raise ShardingError(
                f"Rules: param {r.path!r} of shape {r.shape}: dimension {dim} has size "
                f"{r.shape[dim]}, which mesh axis {'x'.join(names)} of size {size} does not "
                f"divide (sharding {spec} from {by})"
            )


def _shard_shape(r: Resolved, axes: Mapping[str, int], rules: tuple[Rule, ...]) -> tuple[int, ...]:
    _check_fit(r, axes, rules)
    split = [math.prod(axes[n] for n in _axis_names(e)) for e in r.sharding]
    split += [1] * (len(r.shape) - len(split))
    return tuple(d // s for d, s in zip(r.shape, split, strict=True))


def _text(value: Any) -> str:
    return value.name if isinstance(value, np.dtype) else repr(value)


def _cell(value: Any, source: int | None) -> str:
    text = "-" if value is None else _text(value)
    return text if source is None else f"{text} #{source}"


def _unmatched(i: int, rule: Rule, paths: list[str], layers: list[str]) -> str:
    remat_only = set(rule.settings()) == {"remat"}
    kind, listed = ("layer", layers) if remat_only else ("parameter", paths)
    shown = ", ".join(listed[:8]) + (f", ... ({len(listed)} in all)" if len(listed) > 8 else "")
    message = f"Rules: rule #{i} {rule.pattern!r} matches no {kind} path; {kind} paths: {shown}"
    if not remat_only and any(fnmatch.fnmatchcase(p, rule.pattern) for p in layers):
        message += f"; it matches a layer: write {rule.pattern + '/*'!r} for its params"
    return message
