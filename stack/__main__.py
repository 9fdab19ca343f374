"""`iot-stack`: run the whole system locally (`make run`) and tell the story (`make demo`)."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def run() -> None:
    """Start every role with embedded defaults in the foreground; Ctrl-C stops them all."""
    from stack.local import run as run_stack

    raise typer.Exit(run_stack())


@app.command()
def demo() -> None:
    """Tell the Jane/John story against a running `make run`."""
    from stack.demo import main as run_demo

    raise typer.Exit(run_demo())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
