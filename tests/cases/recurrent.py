"""Recurrent cells, RNN wrappers and the RNN classifier.

Cells take the pair ``(carry, x_t)``. Variable lengths and masks are side inputs
(``Case.side``); final carries are taps, not outputs.
"""

from nn_jax.models.rnn import RNNClassifier
from nn_jax.recurrent import RNN, Bidirectional, GRUCell, LSTMCell, SimpleRNNCell, StackedRNN
from tests.cases import Case, normal


def cell_input(carry_shapes, features=2, batch=3):
    def make(g):
        carry = tuple(g.standard_normal((batch, h)) for h in carry_shapes)
        return (carry if len(carry) > 1 else carry[0], g.standard_normal((batch, features)))

    return make


def lengths(batch, steps):
    return lambda g: {"lengths": g.integers(0, steps + 1, batch)}


def mask(*shape):
    return lambda g: {"mask": g.random(shape) < 0.7}


def tokens(batch, steps, vocab):
    return lambda g: g.integers(0, vocab, (batch, steps))


CASES = [
    Case("simple_rnn_cell", SimpleRNNCell(4), cell_input((4,))),
    Case("lstm_cell", LSTMCell(4), cell_input((4, 4))),
    Case("gru_cell", GRUCell(4), cell_input((4,))),
    Case("rnn_lstm", RNN(LSTMCell(4)), normal(3, 5, 2)),
    Case(
        "rnn_gru_reverse_lengths_unroll_hoisted",
        RNN(GRUCell(3), reverse=True, unroll=2, hoist_input_projection=True),
        normal(2, 6, 3),
        side=lengths(2, 6),
    ),
    Case(
        "rnn_simple_last_time_major",
        RNN(SimpleRNNCell(3), return_sequences=False, time_major=True),
        normal(5, 2, 3),
    ),
    Case("bidirectional_lstm_concat", Bidirectional(RNN(LSTMCell(3))), normal(2, 4, 2)),
    Case(
        "bidirectional_gru_sum_last",
        Bidirectional(RNN(GRUCell(3), return_sequences=False), merge="sum"),
        normal(2, 4, 2),
    ),
    Case(
        "stacked_rnn",
        StackedRNN((RNN(GRUCell(4)), Bidirectional(RNN(LSTMCell(3))))),
        normal(2, 5, 2),
        side=mask(2, 5),
    ),
    Case("rnn_classifier_gru", RNNClassifier(3, cell="gru", hidden=4), normal(3, 6, 2)),
    Case(
        "rnn_classifier_lengths_bidirectional_mean",
        RNNClassifier(3, cell="lstm", hidden=3, num_layers=2, bidirectional=True, pooling="mean"),
        normal(3, 5, 2),
        side=lengths(3, 5),
    ),
    Case(
        "rnn_classifier_tokens_dropout",
        RNNClassifier(2, cell="rnn", hidden=4, vocab_size=7, num_layers=2, dropout_rate=0.2),
        tokens(3, 5, 7),
        train=True,
        rng=True,
    ),
]
