"""Convolutions over 1-D, 2-D and 3-D inputs: ``Conv`` and its adjoint ``ConvTranspose``.

One implementation serves every spatial rank. Both lower to a single
``jax.lax.conv_general_dilated``.

Sizes. ``kernel_size``, ``strides``, the dilations and ``output_padding`` are each an int, the
same on every spatial axis (``Conv(8, 3, strides=2)`` is a 3x3 stride-2 conv on images, as in
PyTorch's ``Conv2d(..., 3, stride=2)``), or a tuple with one entry per spatial axis
(``Conv(8, (3, 3), strides=(2, 1))``). A tuple fixes the spatial rank (its length; "CAUSAL"
padding fixes it to 1). With ints only, ``init`` reads the rank from the example input, which
must then have one batch axis, ``(N, *spatial, C)``: rank ``x.ndim - 2``; ``apply`` reads it
back from the kernel ``w``, so it accepts any number of batch axes, as the tuple form does. For
an unbatched example at init, or several batch axes, give a tuple ``kernel_size``.

Layout. Inputs are channels-last by default, ``(*batch, *spatial, C)``: NWC, NHWC, NDHWC. Any
number of leading batch axes is accepted (none for one example). To feed channels-first data
(PyTorch's NCHW) pass ``data_format="channels_first"``: inputs and outputs are then
``(*batch, C, *spatial)``; the kernel layout does not change.

Kernel layout. ``Conv``'s kernel is ``(*kernel_size, C_in // groups, features)``: WIO, HWIO,
DHWIO (TensorFlow/Flax order). ``ConvTranspose``'s kernel is the kernel of the ``Conv`` it is the
transpose of: ``(*kernel_size, features // groups, C_in)``.

Padding. ``"SAME"`` (``ceil(n / stride)`` outputs, the extra padding at the end), ``"VALID"`` (no
padding), ``"CAUSAL"`` (1-D only: ``dilation * (k - 1)`` zeros at the start, so output ``t``
sees inputs ``<= t * stride``), an int, or one int or ``(lo, hi)`` pair per spatial axis.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from dataclasses import KW_ONLY
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from nn_jax import _spatial as sp
from nn_jax import initializers
from nn_jax.core import Array, Call, Initializer, Layer, Params, PRNGKey, Size, State
from nn_jax.dense import check_floating, default_kernel_init, weight_and_bias
from nn_jax.errors import ConfigError, ShapeError

__all__ = ["Conv", "ConvTranspose"]

transpose_kernel_init: Initializer = initializers.lecun_normal(in_axis=-1, out_axis=-2)
"""LeCun normal for `ConvTranspose` kernels `(*k, F // groups, C_in)`: fan-in `prod(k) C_in`."""


@dataclasses.dataclass(frozen=True)
class _ConvBase(sp.SpatialRank, Layer):
    """Options and maths shared by :class:`Conv` and :class:`ConvTranspose`.

    ``compute`` checks the kernel and input and hands the subclass's ``_convolve`` a
    ``(B, ...)`` input; an int ``kernel_size`` is resolved to a tuple first (from the example
    input's rank at init, from the kernel's rank at apply).
    """

    features: Size
    kernel_size: int | tuple[int, ...]
    _: KW_ONLY
    strides: int | tuple[int, ...] = 1
    padding: Any = "SAME"
    kernel_dilation: int | tuple[int, ...] = 1
    feature_group_count: Size = 1
    use_bias: bool = True
    data_format: str = "channels_last"
    dtype: Any = None
    param_dtype: Any = jnp.float32
    w_init: Initializer = default_kernel_init
    b_init: Initializer = initializers.zeros
    precision: Any = None

    rank_field: ClassVar[str] = "kernel_size"
    _sizes: ClassVar[dict[str, int]] = {"kernel_size": 1, "strides": 1, "kernel_dilation": 1}

    def __post_init__(self) -> None:
        name = type(self).__name__
        sp.normalize_fields(self, self._sizes, padding=True)
        groups = self.feature_group_count
        if self.features % groups:
            raise ConfigError(
                f"{name}: feature_group_count must be a positive int dividing features="
                f"{self.features}, given {groups!r}"
            )
        sp.check_format(name, self.data_format)

    @property
    def ndim(self) -> int:
        """Number of spatial axes (1, 2 or 3) of a layer with a tuple ``kernel_size``."""
        return len(self.kernel_size)  # type: ignore[arg-type]

    def _channels(self, x: Array) -> int:
        sp.check_spatial_rank(self, x, self.ndim, self.data_format)
        return x.shape[sp.channel_axis(x.ndim, self.ndim, self.data_format)]

    def _dilated_kernel(self) -> tuple[int, ...]:
        """The kernel's extent ``d * (k - 1) + 1`` per spatial axis."""
        return tuple(map(sp.dilate, self.kernel_size, self.kernel_dilation))  # type: ignore[arg-type]

    def _spatial_sizes(self, x: Array) -> tuple[int, ...]:
        return tuple(x.shape[a] for a in sp.spatial_axes(x.ndim, self.ndim, self.data_format))

    @abc.abstractmethod
    def _kernel_io(self, channels: int | None) -> tuple[int | str, int | str]:
        """The kernel's last two axes for ``channels`` input channels (names for ``None``)."""

    @abc.abstractmethod
    def _in_channels(self, w: Array) -> int:
        """The input channel count kernel ``w`` was made for."""

    @abc.abstractmethod
    def _convolve(self, x: Array, w: Array, sizes: tuple[int, ...]) -> Array:
        """The layer's linear map on a ``(B, ...)`` input with spatial ``sizes`` (no bias)."""

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        layer = self.for_input(x)
        channels = layer._channels(x)
        groups = self.feature_group_count
        if channels % groups:
            raise self.error(
                ShapeError,
                f"input channels {channels} must be divisible by feature_group_count={groups}",
            )
        shape = (*layer.kernel_size, *self._kernel_io(channels))
        return weight_and_bias(self, key, shape), {}

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        w = self.param(params, "w")
        x = jnp.asarray(x)
        layer = self._for_kernel(w)
        channels = layer._channels(x)
        check_floating(self, x)
        layer._check_kernel(w)
        if channels != layer._in_channels(w):
            raise self.error(
                ShapeError,
                f"input has {channels} channels (input shape {tuple(x.shape)}, "
                f"{self.data_format}), expected {layer._in_channels(w)}, the channel count this "
                f"layer was initialized with (w: {tuple(w.shape)}, feature_group_count="
                f"{self.feature_group_count})",
            )
        dtype = self.dtype or jnp.result_type(x.dtype, w.dtype)
        xb, batch = sp.flatten_batch(x, layer.ndim)
        y = layer._convolve(xb.astype(dtype), w.astype(dtype), layer._spatial_sizes(x))
        if self.use_bias:
            b = self.param(params, "b", (self.features,)).astype(y.dtype)
            shape = [1] * y.ndim
            shape[sp.channel_axis(y.ndim, layer.ndim, self.data_format)] = self.features
            y = y + b.reshape(shape)
        return y.reshape((*batch, *y.shape[1:])), {}

    def _for_kernel(self, w: Array) -> _ConvBase:
        """This layer at the spatial rank of kernel ``w`` (for an int ``kernel_size``)."""
        if self.spatial_rank is None and not 1 <= w.ndim - 2 <= 3:
            io = ", ".join(map(str, self._kernel_io(None)))
            raise self.error(
                ShapeError,
                f"parameter 'w' has shape {tuple(w.shape)}, expected (*kernel_size, {io}) with "
                "1 to 3 spatial axes",
            )
        return self.at_rank(w.ndim - 2)

    def _check_kernel(self, w: Array) -> None:
        """``w`` must have the kernel's shape (string entries match any size)."""
        expected = (*self.kernel_size, *self._kernel_io(None))  # type: ignore[misc]
        if w.ndim != len(expected) or any(
            isinstance(e, int) and e != d for e, d in zip(expected, w.shape, strict=True)
        ):
            shown = "(" + ", ".join(map(str, expected)) + ")"
            raise self.error(
                ShapeError, f"parameter 'w' has shape {tuple(w.shape)}, expected {shown}"
            )

    def _conv(
        self,
        x: Array,
        w: Array,
        pads: tuple[tuple[int, int], ...],
        lhs_dilation: tuple[int, ...] | None = None,
    ) -> Array:
        """``conv_general_dilated`` of a ``(B, ...)`` input with this layer's options."""
        io = sp.layout(self.ndim, "channels_last")[1:-1] + "IO"
        out_layout = sp.layout(self.ndim, self.data_format)
        return jax.lax.conv_general_dilated(
            x,
            w,
            window_strides=self.strides,  # type: ignore[arg-type]
            padding=pads,
            lhs_dilation=lhs_dilation,
            rhs_dilation=self.kernel_dilation,  # type: ignore[arg-type]
            dimension_numbers=(out_layout, io, out_layout),
            feature_group_count=self.feature_group_count,
            precision=self.precision,
        )

    def _empty_output_error(self, sizes: tuple[int, ...], outs: tuple[int, ...]) -> ShapeError:
        return self.error(
            ShapeError,
            f"spatial input size {sizes} gives an empty output {outs} with kernel_size="
            f"{self.kernel_size}, kernel_dilation={self.kernel_dilation}, strides={self.strides}, "
            f"padding={self.padding!r}; use a larger input or padding='SAME'",
        )


@dataclasses.dataclass(frozen=True)
class Conv(_ConvBase):
    """N-D convolution (cross-correlation, as in every deep-learning library) plus bias.

    .. math::
        y[b, o, f] = \\sum_{k, c} x_{pad}[b, o \\cdot s + k \\cdot d, g(f) \\cdot C_g + c]
        \\, w[k, c, f] + b[f]

    where ``x_pad`` is the input (dilated by ``input_dilation``, then padded), ``s`` the strides,
    ``d`` the kernel dilation, ``C_g = C_in / groups`` and ``g(f) = f // (features / groups)``
    the group of output feature ``f``.

    Args:
        features: output channels ``F``.
        kernel_size: window size: an int (the same on every spatial axis; the rank is then
            read from the input, see the module docstring) or a tuple of 1, 2 or 3 ints, whose
            length is the spatial rank.
        strides: int or one int per spatial axis.
        padding: ``"SAME"``, ``"VALID"``, ``"CAUSAL"`` (1-D), an int, or one int or
            ``(lo, hi)`` pair per spatial axis (in units of the dilated input).
        input_dilation: "lhs" dilation, ``input_dilation - 1`` zeros between input elements
            (a fractionally strided convolution).
        kernel_dilation: "rhs" (atrous) dilation of the kernel.
        feature_group_count: ``groups``; it divides ``C_in`` and ``F``. ``groups = C_in`` is a
            depthwise convolution (``F = multiplier * C_in``).
        use_bias: add ``b``.
        data_format: ``"channels_last"`` (``(*batch, *spatial, C)``) or ``"channels_first"``
            (``(*batch, C, *spatial)``).
        dtype: computation dtype; ``None`` uses the promoted dtype of input and params.
        param_dtype: storage dtype of ``w`` and ``b``.
        w_init, b_init: initializers with the ``(key, shape, dtype)`` signature (LeCun normal,
            fan-in ``prod(kernel_size) * C_in / groups``, and zeros). A
            :class:`~nn_jax.initializers.FanInInitializer` gets that fan-in as ``fan_in=``.
        precision: passed to ``jax.lax.conv_general_dilated``.

    Input ``(*batch, *spatial, C_in)`` -> output ``(*batch, *out_spatial, F)``.
    Params: ``w: (*kernel_size, C_in // groups, F)``, ``b: (F,)``.

    >>> import jax, jax.numpy as jnp
    >>> conv = Conv(8, 3, strides=2)  # same as Conv(8, (3, 3), strides=(2, 2)) on images
    >>> params, _ = conv.init(jax.random.key(0), jnp.zeros((2, 16, 16, 3)))
    >>> jax.tree.map(jnp.shape, params)
    {'b': (8,), 'w': (3, 3, 3, 8)}
    >>> conv(params, jnp.zeros((2, 16, 16, 3))).shape
    (2, 8, 8, 8)
    """

    _: KW_ONLY
    input_dilation: int | tuple[int, ...] = 1

    _sizes: ClassVar[dict[str, int]] = {**_ConvBase._sizes, "input_dilation": 1}

    def _kernel_io(self, channels: int | None) -> tuple[int | str, int | str]:
        c_in = "C_in // groups" if channels is None else channels // self.feature_group_count
        return c_in, self.features

    def _in_channels(self, w: Array) -> int:
        return w.shape[-2] * self.feature_group_count

    def _convolve(self, x: Array, w: Array, sizes: tuple[int, ...]) -> Array:
        dilated = tuple(map(sp.dilate, sizes, self.input_dilation))  # type: ignore[arg-type]
        window = self._dilated_kernel()
        pads = sp.resolve_padding(self.padding, dilated, window, self.strides)  # type: ignore[arg-type]
        outs = tuple(map(sp.out_size, dilated, pads, window, self.strides))  # type: ignore[arg-type]
        if min(outs) <= 0:
            raise self._empty_output_error(sizes, outs)
        return self._conv(x, w, pads, self.input_dilation)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class ConvTranspose(_ConvBase):
    """Transposed ("de-") convolution: the adjoint of :class:`Conv` (PyTorch's semantics).

    ``ConvTranspose(C_x, k, strides=s, padding=p, kernel_dilation=d, feature_group_count=g)``
    with kernel ``w`` is the transpose of the linear map ``x -> Conv(C_y, k, strides=s,
    padding=p, kernel_dilation=d, feature_group_count=g, use_bias=False)(w, x)``: for the same
    ``w``, every ``x`` of the transposed output's shape and every ``y``,

        <conv(x), y> == <x, conv_transpose(y)>      (sum of elementwise products)

    (with ``use_bias=False`` for both; the bias is added after). It is computed with
    ``jax.linear_transpose`` of that convolution, which lowers to one ``conv_general_dilated``
    with ``lhs_dilation = strides`` and a flipped kernel. As in PyTorch, ``padding`` is the
    padding of the forward convolution (so ``padding=p`` *removes* ``p`` from each side of the
    output); this differs from Flax's ``nn.ConvTranspose``, whose padding applies to the dilated
    input and whose kernel is not flipped (``transpose_kernel=False``).

    Output spatial size per axis, for input size ``m``, ``K = d * (k - 1) + 1``:

    * ``"SAME"`` and ``"CAUSAL"``: ``m * s`` (the largest size a strided "SAME" conv maps to ``m``);
    * ``"VALID"``: ``(m - 1) * s + K + output_padding``;
    * ``(lo, hi)``: ``(m - 1) * s + K - lo - hi + output_padding``.

    Several input sizes map to the same strided conv output size; ``output_padding`` (in
    ``[0, s)``, not with "SAME"/"CAUSAL") picks a larger one, as in PyTorch.

    Args:
        features: output channels ``F`` (the input channels of the forward conv).
        kernel_size, strides, padding, kernel_dilation, feature_group_count, use_bias,
        data_format, dtype, param_dtype, b_init, precision: as in :class:`Conv`.
        output_padding: int or one int per spatial axis, see above.
        w_init: kernel initializer; default LeCun normal with fan-in
            ``prod(kernel_size) * C_in`` (``in_axis=-1``).

    Fan-in initializers (:class:`~nn_jax.initializers.FanInInitializer`, for ``w_init`` and
    ``b_init``) get ``fan_in = prod(kernel_size) * F / groups``: the kernel without its last
    axis, as for :class:`Conv`. This is PyTorch's fan-in for ``nn.ConvTranspose*d`` (its weight
    is ``(C_in, F / groups, *k)`` and the fan-in is read from axis 1), so
    ``b_init=uniform_fan_in()`` is PyTorch's default bias; it is not the default kernel's
    ``prod(kernel_size) * C_in``.

    There is no ``input_dilation``: a transposed convolution *is* the input-dilated convolution
    (its strides become the lhs dilation); use :class:`Conv` with ``input_dilation`` to get one
    directly.

    Input ``(*batch, *spatial, C_in)`` -> output ``(*batch, *out_spatial, F)``.
    Params: ``w: (*kernel_size, F // groups, C_in)``, ``b: (F,)``.

    >>> import jax, jax.numpy as jnp
    >>> up = ConvTranspose(4, (2, 2), strides=2)
    >>> params, _ = up.init(jax.random.key(0), jnp.zeros((1, 8, 8, 16)))
    >>> jax.tree.map(jnp.shape, params)
    {'b': (4,), 'w': (2, 2, 4, 16)}
    >>> up(params, jnp.zeros((1, 8, 8, 16))).shape
    (1, 16, 16, 4)
    """

    _: KW_ONLY
    output_padding: int | tuple[int, ...] = 0
    w_init: Initializer = transpose_kernel_init

    _sizes: ClassVar[dict[str, int]] = {**_ConvBase._sizes, "output_padding": 0}

    def __post_init__(self) -> None:
        super().__post_init__()
        n = self.spatial_rank or 1
        op, strides = sp.per_axis(self.output_padding, n), sp.per_axis(self.strides, n)
        if any(o >= s for o, s in zip(op, strides, strict=True)) or (
            isinstance(self.padding, str) and self.padding != "VALID" and any(op)
        ):
            raise ConfigError(
                f"ConvTranspose: output_padding must be < strides={self.strides} per axis and 0 "
                f"with padding 'SAME' or 'CAUSAL', given {self.output_padding!r} with padding "
                f"{self.padding!r}"
            )

    def _kernel_io(self, channels: int | None) -> tuple[int | str, int | str]:
        return self.features // self.feature_group_count, "C_in" if channels is None else channels

    def _in_channels(self, w: Array) -> int:
        return w.shape[-1]

    def output_sizes(self, sizes: tuple[int, ...]) -> tuple[int, ...]:
        """Output spatial sizes for input spatial sizes ``sizes`` (see the class docstring)."""
        layer = self.at_rank(len(sizes))
        pads = sp.per_axis(layer.padding, len(sizes))
        outs = []
        for m, window, s, op, pad in zip(
            sizes, layer._dilated_kernel(), layer.strides, layer.output_padding, pads, strict=True
        ):
            if pad in ("SAME", "CAUSAL"):
                outs.append(m * s)
            else:
                lo, hi = (0, 0) if pad == "VALID" else pad
                outs.append((m - 1) * s + window - lo - hi + op)
        return tuple(outs)

    def _convolve(self, x: Array, w: Array, sizes: tuple[int, ...]) -> Array:
        outs = self.output_sizes(sizes)
        if min(outs) <= 0:
            raise self._empty_output_error(sizes, outs)
        pads = sp.resolve_padding(self.padding, outs, self._dilated_kernel(), self.strides)  # type: ignore[arg-type]
        out_shape = list(x.shape)
        out_shape[sp.channel_axis(x.ndim, self.ndim, self.data_format)] = self.features
        for axis, size in zip(
            sp.spatial_axes(x.ndim, self.ndim, self.data_format), outs, strict=True
        ):
            out_shape[axis] = size
        conv = functools.partial(self._conv, w=w, pads=pads)
        (y,) = jax.linear_transpose(conv, jax.ShapeDtypeStruct(tuple(out_shape), x.dtype))(x)
        return y
