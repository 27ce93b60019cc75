"""mcp_server: the MCP server, job service and command line of DGX Music."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dgx-music")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
