"""`python -m mcp_server` = `dgx-music`."""

from mcp_server.cli import app

app(prog_name="dgx-music")
