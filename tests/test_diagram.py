"""The seed's interactive MLP diagram: its numbers against NumPy, its sliders, its figure."""

import sys

import numpy as np
import pytest

from nn_jax import diagram as dg
from nn_jax.errors import ArgumentError

pytest.importorskip("matplotlib")

# The seed's example and the documented defaults, written out again here (not read from
# nn_jax.diagram.MLP_DIAGRAM_DEFAULTS): input i -> hidden j weights, hidden biases, output
# weights and bias.
SEED = {"x1": 0.5, "x2": -0.2}
W_IN = np.array([[0.8, -0.9, 0.6], [-0.4, 0.6, 0.1]])  # [i, j] = w{i+1}{j+1}
B_IN = np.zeros(3)
W_OUT = np.array([0.9, 0.2, 0.5])
B_OUT = 0.2


def numpy_forward(x1, x2, w_in=W_IN, b_in=B_IN, w_out=W_OUT, b_out=B_OUT):
    h = np.tanh(np.array([x1, x2]) @ w_in + b_in)
    z = h @ w_out + b_out
    return 1.0 / (1.0 + np.exp(-z)), z, h


def test_seed_example_values():
    shown = dg.MLPDiagram().values
    assert round(shown.z_out, 3) == 0.635
    assert round(shown.prediction, 4) == 0.6536
    p, z, h = numpy_forward(**SEED)
    assert round(z, 3) == 0.635 and round(p, 4) == 0.6536
    np.testing.assert_allclose(shown.z_out, z, atol=1e-6)
    np.testing.assert_allclose(shown.prediction, p, atol=1e-6)
    np.testing.assert_allclose(shown.hidden, h, atol=1e-6)


def test_params_layout_matches_the_names():
    params = dg.mlp_diagram_params({"w23": 1.25, "wOut2": -0.75, "b3": 0.5, "bOut": -1.0})
    assert float(params["hidden"]["w"][1, 2]) == 1.25  # input 2 -> hidden 3
    assert float(params["output"]["w"][1, 0]) == -0.75
    assert float(params["hidden"]["b"][2]) == 0.5
    assert float(params["output"]["b"][0]) == -1.0
    assert float(params["hidden"]["w"][0, 0]) == pytest.approx(0.8)


def test_set_recomputes_like_numpy_and_rejects_unknown_names():
    d = dg.MLPDiagram()
    shown = d.set(x1=-0.7, w21=1.1, wOut3=-1.2, b2=0.3)
    w_in, b_in, w_out = W_IN.copy(), B_IN.copy(), W_OUT.copy()
    w_in[1, 0], w_out[2], b_in[1] = 1.1, -1.2, 0.3
    p, z, h = numpy_forward(-0.7, SEED["x2"], w_in, b_in, w_out)
    np.testing.assert_allclose([shown.prediction, shown.z_out], [p, z], atol=1e-6)
    np.testing.assert_allclose(shown.hidden, h, atol=1e-6)
    with pytest.raises(ArgumentError, match=r"unknown value name\(s\) \['w31'\]"):
        d.set(w31=1.0)


@pytest.fixture(scope="module")
def ui_diagram():
    pytest.importorskip("ipywidgets")
    d = dg.MLPDiagram()
    d.widget()
    return d


def test_slider_fires_the_observer_and_redraws(ui_diagram):
    d = ui_diagram
    assert set(d.sliders) == set(dg.MLP_DIAGRAM_DEFAULTS)
    d.sliders["w11"].value = -1.5  # the real ipywidgets observer runs MLPDiagram.set
    d.sliders["x2"].value = 0.9
    w_in = W_IN.copy()
    w_in[0, 0] = -1.5
    p, z, _ = numpy_forward(SEED["x1"], 0.9, w_in)
    assert d.settings["w11"] == -1.5
    np.testing.assert_allclose(d.values.prediction, p, atol=1e-6)
    expected_apply = dg.mlp_diagram_forward({"w11": -1.5, "x2": 0.9})
    assert d.values == expected_apply
    texts = [t.get_text() for t in d.figure.axes[0].texts]
    assert f"z_out = wᵀ·h + b = {z:.3f}\nOutput prediction: {p:.4f}" in texts
    line = next(ln for ln in d.figure.axes[0].lines if ln.get_gid() == "w11")
    assert line.get_color() == dg.NEGATIVE


def test_figure_has_legend_and_widths_proportional_to_weights():
    values = {"w11": 0.8, "w21": -0.4, "w12": 1.6, "w13": -2.0, "wOut1": 0.9, "wOut2": 0.0}
    fig = dg.draw_mlp_diagram(values)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["positive weights", "negative weights"]
    assert legend[2].startswith("output activation")
    lines = {ln.get_gid(): ln for ln in ax.lines if ln.get_gid()}
    assert len(lines) == 9
    all_weights = {**dg.MLP_DIAGRAM_DEFAULTS, **values}
    ratio = lines["w11"].get_linewidth() / 0.8
    for name, ln in lines.items():
        assert ln.get_linewidth() == pytest.approx(ratio * abs(all_weights[name])), name
        if all_weights[name] != 0:
            assert ln.get_color() == (dg.POSITIVE if all_weights[name] > 0 else dg.NEGATIVE)
    assert lines["w13"].get_linewidth() == pytest.approx(2.5 * lines["w11"].get_linewidth())
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith("z_out = wᵀ·h + b = ") for t in texts)
    assert ax.get_title() and len(fig.axes) == 2  # the colourbar's axes


def test_static_fallback_without_ipywidgets(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # `import ipywidgets` raises
    d = dg.MLPDiagram()
    shown = d.show()
    assert shown is d.figure
    assert "static figure" in capsys.readouterr().out
    with pytest.raises(ImportError):
        d.widget()
    assert round(d.set(x1=0.5).z_out, 3) == 0.635
