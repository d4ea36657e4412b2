"""Commands whose issue has not landed yet: they say so and exit 2."""

from __future__ import annotations

import typer

from onnxg.cli._common import not_implemented

PENDING = {
    "convert": ("Convert a model (HF repo/folder, GGUF, TF SavedModel, recipe) to ONNX.", 6),
    "check": ("Check that a model folder is servable.", 6),
    "pull": ("Download a ready ONNX model from the Hugging Face hub.", 7),
    "models": ("List local models.", 7),
    "chat": ("Chat with a model in the terminal.", 3),
    "embed": ("Embed text to vectors.", 4),
    "serve": ("Serve models behind an OpenAI-compatible API.", 5),
    "bench": ("Benchmark a model.", 8),
}


def register(app: typer.Typer, name: str) -> None:
    help_text, issue = PENDING[name]

    def command(args: list[str] = typer.Argument(None, hidden=True)) -> None:
        not_implemented(name, issue)

    app.command(
        name,
        help=f"{help_text} (not implemented yet)",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(command)
