"""The CLI's help shows every option's default in full, whatever the terminal's width."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from app.cli import cli


@pytest.mark.parametrize("columns", ["80", "200"])
def test_help_shows_long_defaults_whole(columns: str) -> None:
    result = CliRunner().invoke(cli, ["evaluate", "--help"], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    # a long default wrapped over lines is still all there, never cut with an ellipsis
    squeezed = "".join(result.output.split())
    assert "[default:rbm,ease,item_quality,bias,popularity,global_mean]" in squeezed
    assert "…" not in result.output
