"""The seed's interactive diagram: a 2-3-1 perceptron whose activations you can watch.

"Multi-Layer Perceptron Activations": slide the inputs ``x1`` and ``x2`` or any weight and see
the hidden activations, the output pre-activation ``z_out = wᵀ·h + b`` and the prediction
``sigmoid(z_out)`` change; synapses are drawn with a thickness proportional to ``|weight|`` and
coloured by sign, neurons are coloured by their activation.

The network is an nn_jax model (:func:`mlp_diagram_model`)::

    Sequential(hidden=Dense(3), tanh=tanh, output=Dense(1), sigmoid=sigmoid)

and every number shown is computed by its ``apply``; ``z_out`` and the hidden activations are
read through taps (:func:`nn_jax.inspect.apply_with_intermediates`, paths ``"tanh"`` and
``"output"``).

**Names of the values** (:data:`MLP_DIAGRAM_DEFAULTS`): ``x1``, ``x2`` the inputs; ``wij``
the weight from input ``i`` to hidden neuron ``j`` (``params["hidden"]["w"][i - 1, j - 1]``);
``bj`` the bias of hidden neuron ``j``; ``wOutj`` the weight from hidden neuron ``j`` to the output
(``params["output"]["w"][j - 1, 0]``); ``bOut`` the output bias.

**The defaults reproduce the seed's example.** The seed fixes ``x1 = 0.50``, ``x2 = -0.20``,
``w11 = 0.80``, ``w21 = -0.40``, ``wOut1 = 0.90`` and prints ``z_out = 0.635`` and a prediction of
``0.6536``. The other values were chosen on a grid of one decimal so that the example gives
those numbers: ``w12 = -0.9``, ``w22 = 0.6``, ``w13 = 0.6``, ``w23 = 0.1``, ``wOut2 = 0.2``,
``wOut3 = 0.5``, hidden biases ``0`` and ``bOut = 0.2``. Then ``h = tanh((0.48, -0.57, 0.28)) =
(0.4462, -0.5154, 0.2729)``, ``z_out = 0.9·0.4462 + 0.2·(-0.5154) + 0.5·0.2729 + 0.2 =
0.63500`` and ``sigmoid(0.635) = 0.65362``.

matplotlib (``pip install 'nn-jax[examples]'``) and ipywidgets (``'nn-jax[notebooks]'``) are
imported only when a figure or the widgets are made.

>>> diagram = MLPDiagram()
>>> shown = diagram.values
>>> round(shown.z_out, 3), round(shown.prediction, 4)
(0.635, 0.6536)
>>> shown = diagram.set(x1=-0.5)
>>> round(shown.prediction, 4)
0.4577
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax.combinators import Sequential
from nn_jax.core import Params
from nn_jax.dense import Dense
from nn_jax.errors import ArgumentError, ValueRangeError
from nn_jax.inspect import apply_with_intermediates

__all__ = [
    "MLP_DIAGRAM_DEFAULTS",
    "DiagramValues",
    "MLPDiagram",
    "draw_mlp_diagram",
    "mlp_diagram_forward",
    "mlp_diagram_model",
    "mlp_diagram_params",
]

HIDDEN = 3
"""Hidden neurons of the diagram's network."""

MLP_DIAGRAM_DEFAULTS: dict[str, float] = {
    "x1": 0.5,
    "x2": -0.2,
    "w11": 0.8,
    "w21": -0.4,
    "w12": -0.9,
    "w22": 0.6,
    "w13": 0.6,
    "w23": 0.1,
    "b1": 0.0,
    "b2": 0.0,
    "b3": 0.0,
    "wOut1": 0.9,
    "wOut2": 0.2,
    "wOut3": 0.5,
    "bOut": 0.2,
}
"""The diagram's inputs, weights and biases; the seed's example (see the module docstring)."""

INPUTS = ("x1", "x2")
WEIGHTS = tuple(f"w{i}{j}" for j in range(1, HIDDEN + 1) for i in (1, 2)) + tuple(
    f"wOut{j}" for j in range(1, HIDDEN + 1)
)
BIASES = (*(f"b{j}" for j in range(1, HIDDEN + 1)), "bOut")
SLIDER_RANGE = (-2.0, 2.0)
"""Range of every slider (inputs, weights and biases)."""

POSITIVE, NEGATIVE = "tab:blue", "tab:red"
_MAX_LINE_WIDTH = 6.0  # points, for |weight| == max(|SLIDER_RANGE|)


class DiagramValues(NamedTuple):
    """What the diagram displays for one setting.

    Attributes:
        prediction: ``sigmoid(z_out)``, the network's output.
        z_out: the output neuron's pre-activation ``wOutᵀ·h + bOut``.
        hidden: the hidden activations ``tanh(W x + b)``, a tuple of 3 floats.
    """

    prediction: float
    z_out: float
    hidden: tuple[float, ...]


def mlp_diagram_model() -> Sequential:
    """The diagram's network: ``Sequential(hidden=Dense(3), tanh=tanh, output=Dense(1),
    sigmoid=sigmoid)``, input ``(B, 2)`` -> output ``(B, 1)``.

    >>> import jax, jax.numpy as jnp
    >>> params, _ = mlp_diagram_model().init(jax.random.key(0), jnp.zeros((1, 2)))
    >>> jax.tree.map(jnp.shape, params)
    {'hidden': {'b': (3,), 'w': (2, 3)}, 'output': {'b': (1,), 'w': (3, 1)}}
    """
    return Sequential(hidden=Dense(HIDDEN), tanh=jnp.tanh, output=Dense(1), sigmoid=jax.nn.sigmoid)


def _checked(values: Mapping[str, float], where: str) -> dict[str, float]:
    """:data:`MLP_DIAGRAM_DEFAULTS` updated with ``values``; unknown names and non-numbers are
    errors."""
    unknown = sorted(set(values) - set(MLP_DIAGRAM_DEFAULTS))
    if unknown:
        raise ArgumentError(
            f"{where}: unknown value name(s) {unknown}; expected some of "
            f"{list(MLP_DIAGRAM_DEFAULTS)}"
        )
    out = dict(MLP_DIAGRAM_DEFAULTS)
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
            raise ArgumentError(
                f"{where}: {name} must be a real number, given {type(value).__name__} {value!r}"
            )
        if not math.isfinite(value):
            raise ValueRangeError(f"{where}: {name} must be finite, given {value}")
        out[name] = float(value)
    return out


def mlp_diagram_params(values: Mapping[str, float] | None = None) -> Params:
    """The params of :func:`mlp_diagram_model` holding the named weights and biases.

    Args:
        values: names from :data:`MLP_DIAGRAM_DEFAULTS` (``w11``, ``wOut2``, ``bOut``, ...) to
            floats; the missing ones take their default, the inputs ``x1``, ``x2`` are ignored.

    Returns:
        ``{"hidden": {"w": (2, 3), "b": (3,)}, "output": {"w": (3, 1), "b": (1,)}}``, float32.

    >>> params = mlp_diagram_params({"w11": 1.5})
    >>> float(params["hidden"]["w"][0, 0]), float(params["output"]["w"][0, 0])
    (1.5, 0.8999999761581421)
    """
    v = _checked(values or {}, "mlp_diagram_params")
    js = range(1, HIDDEN + 1)
    w = [[v[f"w{i}{j}"] for j in js] for i in (1, 2)]
    return {
        "hidden": {
            "w": jnp.asarray(w, jnp.float32),
            "b": jnp.asarray([v[f"b{j}"] for j in js], jnp.float32),
        },
        "output": {
            "w": jnp.asarray([[v[f"wOut{j}"]] for j in js], jnp.float32),
            "b": jnp.asarray([v["bOut"]], jnp.float32),
        },
    }


def mlp_diagram_forward(values: Mapping[str, float] | None = None) -> DiagramValues:
    """Run :func:`mlp_diagram_model` with ``apply`` on the input ``(x1, x2)`` of ``values``.

    Args:
        values: names from :data:`MLP_DIAGRAM_DEFAULTS` to floats; missing ones take their default.

    Returns:
        The prediction, ``z_out`` and the hidden activations (read through taps at the paths
        ``"output"`` and ``"tanh"``).

    >>> shown = mlp_diagram_forward({"wOut1": -0.9})
    >>> round(shown.z_out, 4), [round(h, 4) for h in shown.hidden]
    (-0.1682, [0.4462, -0.5154, 0.2729])
    """
    v = _checked(values or {}, "mlp_diagram_forward")
    x = jnp.asarray([[v["x1"], v["x2"]]], jnp.float32)
    y, _, taps = apply_with_intermediates(
        mlp_diagram_model(), mlp_diagram_params(v), {}, x, capture=("tanh", "output")
    )
    hidden = np.asarray(taps["tanh"], np.float64)[0]
    return DiagramValues(
        prediction=float(y[0, 0]),
        z_out=float(taps["output"][0, 0]),
        hidden=tuple(float(h) for h in hidden),
    )


def _line_width(weight: float) -> float:
    """The line width (points) of a synapse: proportional to ``|weight|``."""
    return _MAX_LINE_WIDTH * abs(weight) / max(abs(b) for b in SLIDER_RANGE)


# Neuron positions on the figure (x, y).
_INPUT_XY = {1: (0.0, 0.7), 2: (0.0, 0.3)}
_HIDDEN_XY = {1: (1.0, 0.85), 2: (1.0, 0.5), 3: (1.0, 0.15)}
_OUTPUT_XY = (2.0, 0.5)
_RADIUS = 0.075
_NEURON_CMAP = "PRGn"  # activations: purple (-1) to green (+1), apart from the weights' colours


def draw_mlp_diagram(
    values: Mapping[str, float] | None = None,
    shown: DiagramValues | None = None,
    *,
    figure: Any = None,
) -> Any:
    """Draw the diagram's network for ``values`` on a matplotlib figure.

    Neurons are circles coloured by their activation (inputs by their value, hidden neurons by
    ``tanh``, the output by the prediction; colourbar "activation"); each synapse is a line
    whose width is proportional to ``|weight|`` (``_line_width``), blue when positive and red
    when negative, labelled by its name (``line.get_gid() == "w11"``). A legend names
    "positive weights", "negative weights" and "output activation"; the hidden activations,
    ``z_out = wᵀ·h + b`` and the prediction are written on the figure.

    Args:
        values: names from :data:`MLP_DIAGRAM_DEFAULTS` to floats; missing ones take their default.
        shown: the values to write (``mlp_diagram_forward(values)`` when omitted).
        figure: a ``matplotlib.figure.Figure`` to clear and draw on; a new one when omitted.

    Returns:
        The figure.
    """
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle

    v = _checked(values or {}, "draw_mlp_diagram")
    shown = mlp_diagram_forward(v) if shown is None else shown
    fig = Figure(figsize=(10.0, 4.2), layout="constrained") if figure is None else figure
    fig.clear()
    ax = fig.add_subplot()
    cmap, norm = colormaps[_NEURON_CMAP], Normalize(-1.0, 1.0)
    label_box = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none"}

    def synapse(a: tuple[float, float], b: tuple[float, float], name: str, t: float) -> None:
        w = v[name]
        ax.add_line(
            Line2D(
                [a[0], b[0]],
                [a[1], b[1]],
                linewidth=_line_width(w),
                color=POSITIVE if w >= 0 else NEGATIVE,
                alpha=0.8,
                zorder=1,
                gid=name,
            )
        )
        # The weight's label sits on its line, a fraction t of the way from the source.
        lx, ly = a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])
        ax.text(
            lx,
            ly,
            f"{name} {w:+.2f}",
            fontsize=7,
            ha="center",
            va="center",
            zorder=2,
            bbox=label_box,
        )

    def neuron(xy: tuple[float, float], activation: float, name: str) -> None:
        ax.add_patch(
            Circle(
                xy, _RADIUS, facecolor=cmap(norm(activation)), edgecolor="black", zorder=3, gid=name
            )
        )
        ax.text(xy[0], xy[1], name, ha="center", va="center", fontsize=9, zorder=4)

    for j, hxy in _HIDDEN_XY.items():
        for i, ixy in _INPUT_XY.items():
            synapse(ixy, hxy, f"w{i}{j}", 0.27)
        synapse(hxy, _OUTPUT_XY, f"wOut{j}", 0.5)
    for i, (x, y) in _INPUT_XY.items():
        neuron((x, y), v[f"x{i}"], f"x{i}")
        ax.text(
            x - _RADIUS - 0.03, y, f"x{i} = {v[f'x{i}']:+.2f}", ha="right", va="center", fontsize=9
        )
    for j, (x, y) in _HIDDEN_XY.items():
        neuron((x, y), shown.hidden[j - 1], f"h{j}")
        ax.text(
            x + _RADIUS + 0.02,
            y + 0.045,
            f"h{j} = {shown.hidden[j - 1]:+.3f}",
            fontsize=8,
            ha="left",
            va="bottom",
        )
        ax.text(
            x + _RADIUS + 0.02,
            y - 0.045,
            f"b{j} {v[f'b{j}']:+.2f}",
            fontsize=7,
            ha="left",
            va="top",
        )
    x, y = _OUTPUT_XY
    neuron(_OUTPUT_XY, shown.prediction, "ŷ")
    ax.text(
        x + _RADIUS + 0.03, y, f"ŷ = {shown.prediction:.4f}", ha="left", va="center", fontsize=9
    )
    ax.text(x, y - _RADIUS - 0.03, f"bOut {v['bOut']:+.2f}", ha="center", va="top", fontsize=7)
    ax.text(
        x,
        0.1,
        f"z_out = wᵀ·h + b = {shown.z_out:.3f}\nOutput prediction: {shown.prediction:.4f}",
        ha="center",
        va="center",
        fontsize=10,
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6"},
    )
    ax.set_xlim(-0.5, 2.6)
    ax.set_ylim(-0.02, 1.0)
    ax.set_aspect("equal")
    ax.set_xticks([0, 1, 2], ["inputs", "hidden layer (tanh)", "output (sigmoid)"])
    ax.set_yticks([])
    for spine in ("left", "right", "top"):
        ax.spines[spine].set_visible(False)
    ax.set_title("Multi-layer perceptron activations (line width ∝ |weight|)")
    handles = [
        Line2D([], [], color=POSITIVE, linewidth=3, label="positive weights"),
        Line2D([], [], color=NEGATIVE, linewidth=3, label="negative weights"),
        Line2D(
            [],
            [],
            linestyle="",
            marker="o",
            markersize=10,
            markerfacecolor=cmap(norm(shown.prediction)),
            markeredgecolor="black",
            label=f"output activation ({shown.prediction:.4f})",
        ),
    ]
    ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9)
    bar = fig.colorbar(_scalar_mappable(cmap, norm), ax=ax, shrink=0.8)
    bar.set_label("neuron activation (inputs: value)")
    return fig


def _scalar_mappable(cmap: Any, norm: Any) -> Any:
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap)


class MLPDiagram:
    """The interactive diagram: the values, the figure, and sliders that redraw it.

    ``set(x1=..., w11=...)`` is the sliders' callback: it recomputes the network with ``apply``,
    redraws :attr:`figure` and returns the displayed values. :meth:`widget` builds the
    ipywidgets UI (one slider per input, weight and bias, each observed by that callback);
    :meth:`show` displays it, or the static figure with a note when ipywidgets or a notebook
    kernel is missing. In a notebook, the object itself displays as the figure's PNG.

    Args:
        **values: starting values by name (:data:`MLP_DIAGRAM_DEFAULTS` for the rest).

    Attributes:
        settings: the current inputs, weights and biases by name.
        values: what is displayed (:class:`DiagramValues`).
        figure: the ``matplotlib.figure.Figure`` (drawn on first access, redrawn by ``set``).
        sliders: the ipywidgets sliders by name, once :meth:`widget` was called.
    """

    def __init__(self, **values: float) -> None:
        self.settings: dict[str, float] = _checked(values, "MLPDiagram")
        self.values: DiagramValues = mlp_diagram_forward(self.settings)
        self.sliders: dict[str, Any] = {}
        self._figure: Any = None
        self._output: Any = None

    @property
    def figure(self) -> Any:
        """The figure for the current values (a ``matplotlib.figure.Figure``)."""
        if self._figure is None:
            self._figure = draw_mlp_diagram(self.settings, self.values)
        return self._figure

    def set(self, **values: float) -> DiagramValues:
        """Change inputs, weights or biases by name; recompute, redraw and return the values."""
        self.settings = _checked({**self.settings, **values}, "MLPDiagram.set")
        self.values = mlp_diagram_forward(self.settings)
        if self._figure is not None:
            draw_mlp_diagram(self.settings, self.values, figure=self._figure)
        if self._output is not None:
            self._refresh_output()
        return self.values

    def png(self) -> bytes:
        """The figure as PNG bytes (what notebooks display: the figure renders without pyplot)."""
        import io

        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=90)
        return buffer.getvalue()

    def _repr_png_(self) -> bytes:
        return self.png()

    def _refresh_output(self) -> None:
        from IPython.display import Image, display

        self._output.clear_output(wait=True)
        with self._output:
            display(Image(self.png()))

    def _on_slider(self, change: Mapping[str, Any]) -> None:
        """The observer of every slider: ``change["owner"].description`` names the value."""
        self.set(**{change["owner"].description: float(change["new"])})

    def widget(self) -> Any:
        """The ipywidgets UI: the figure above sliders for the inputs, the weights and biases.

        Raises ``ImportError`` when ipywidgets is not installed.
        """
        import ipywidgets as widgets

        def slider(name: str) -> Any:
            s = widgets.FloatSlider(
                value=self.settings[name],
                min=SLIDER_RANGE[0],
                max=SLIDER_RANGE[1],
                step=0.05,
                description=name,
                continuous_update=True,
                readout_format="+.2f",
                layout=widgets.Layout(width="260px"),
            )
            s.observe(self._on_slider, names="value")
            self.sliders[name] = s
            return s

        def group(title: str, names: tuple[str, ...]) -> Any:
            return widgets.VBox([widgets.HTML(f"<b>{title}</b>"), *map(slider, names)])

        self._output = widgets.Output()
        self._refresh_output()
        controls = widgets.HBox(
            [
                group("Inputs", INPUTS),
                group("Weights (synapses)", WEIGHTS[: 2 * HIDDEN]),
                group("Output weights and biases", WEIGHTS[2 * HIDDEN :] + BIASES),
            ]
        )
        return widgets.VBox([self._output, controls])

    def show(self, *, interactive: bool | None = None) -> Any:
        """Display the sliders and live figure, or the static figure with a printed note.

        Args:
            interactive: ``True`` for the widgets (an ``ImportError`` without ipywidgets),
                ``False`` for the static figure; ``None`` chooses the widgets when ipywidgets
                imports and an IPython kernel (a notebook) is running.

        Returns:
            The widget, or the figure when static (displayed as a PNG through IPython when it
            is installed).
        """
        if interactive is None:
            interactive = _widgets_available()
        if interactive:
            ui = self.widget()
            _display(ui)
            return ui
        print(
            "MLPDiagram: static figure (ipywidgets or a notebook kernel is unavailable); "
            "call .set(x1=..., w11=...) to recompute and redraw."
        )
        _display(self)
        return self.figure


def _widgets_available() -> bool:
    """ipywidgets imports and an IPython kernel (which widget frontends talk to) is running."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _display(obj: Any) -> None:
    """``IPython.display.display`` when IPython is there; nothing otherwise (a script)."""
    try:
        from IPython.display import display
    except ImportError:
        return
    display(obj)
