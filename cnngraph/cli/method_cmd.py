"""``cnngraph method [SECTION...]``: the method the code follows (``docs/METHOD.md``), offline."""

from __future__ import annotations

from typing import Annotated

import typer

from cnngraph.bundled import method_path, method_sections, method_text
from cnngraph.cli.common import handle_errors


def register(app: typer.Typer) -> None:
    app.command("method")(method)


@handle_errors
def method(
    sections: Annotated[
        list[int] | None,
        typer.Argument(
            help="Section numbers to print (e.g. 4 8) \\[default: the whole text].", show_default=False
        ),
    ] = None,
    list_sections: Annotated[
        bool, typer.Option("--list", help="List the sections' numbers and titles.")
    ] = False,
    path: Annotated[
        bool, typer.Option("--path", help="Print where the file is (to open it in an editor).")
    ] = False,
) -> None:
    """Print docs/METHOD.md, every rule the code follows, as shipped with this cnngraph.

    '--help' texts and docstrings cite its sections ("docs/METHOD.md section 8"): 'cnngraph method 8'
    prints that one.
    """
    if path:
        typer.echo(str(method_path()))
        return
    if list_sections:
        for number, (title, _) in method_sections().items():
            typer.echo(f"{number}. {title}")
        return
    typer.echo(method_text(sections or None), nl=False)
