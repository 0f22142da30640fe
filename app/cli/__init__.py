"""The ``rbmrec`` command line (typer). Each command group lives in its own module."""

from __future__ import annotations

import typer

from app.cli import db, evaluate, importer, model_versions, serve, train, worker

cli = typer.Typer(
    name="rbmrec",
    help="rbmrec: a recommender service built around a softmax-visible RBM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help wraps every line (rich's panels crop long defaults at 80
    # columns when the output is not a terminal); up to 120 columns where there is room.
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
)

for module in (db, importer, train, evaluate, serve, model_versions, worker):
    module.register(cli)


def main() -> None:
    cli()
