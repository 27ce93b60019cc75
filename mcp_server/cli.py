"""`dgx-music`: serve the MCP server, generate from the shell, browse the history, export to Ardour, check and
set up a host.

Expected failures (bad input, unknown model, bad configuration) end with one ``error: ...`` line on stderr
and exit status 1; a traceback means a bug. Commands that make a file print only its path on stdout (never
wrapped, so ``P=$(dgx-music generate ...)`` works) and their human summary on stderr.

The commands live by what they do: ``cli_processes`` (serve, worker), ``cli_generate``, ``cli_history``
(history, export), ``cli_setup`` (doctor, pull, bundle, db), ``cli_stems``; ``cli_common`` holds what they
share. This module only builds the app from them.
"""

from __future__ import annotations

import typer

from mcp_server.cli_generate import generate
from mcp_server.cli_history import export, history
from mcp_server.cli_processes import serve, worker
from mcp_server.cli_setup import bundle, db_current, db_upgrade, doctor, pull
from mcp_server.cli_stems import stems

app = typer.Typer(
    name="dgx-music",
    help="Generate music with MusicGen: an MCP server, a history and Ardour export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema: upgrade to the latest revision or show the current one.")
app.add_typer(db_app, name="db")

# Registered in the order `dgx-music --help` lists them.
for command in (serve, worker, generate, history, export, doctor, pull, bundle, stems):
    app.command()(command)
db_app.command("upgrade")(db_upgrade)
db_app.command("current")(db_current)
