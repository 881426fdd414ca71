"""The README's main job and the command line."""

import json

import pytest

from nn_jax.cli import main
from nn_jax.jobs import train_digits


@pytest.mark.slow
def test_digits_job_reaches_95_percent_and_writes_outputs(tmp_path):
    result = train_digits(tmp_path, progress=False)
    assert result["test_accuracy"] >= 0.95
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        json.loads((tmp_path / "result.json").read_text())["test_accuracy"]
        == result["test_accuracy"]
    )


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "0"])
    assert "expected a positive integer, given 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["no-such-command"])
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err
