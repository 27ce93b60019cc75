"""The SDK's MCPServer with this server's protocol manners.

- Rejected arguments come back as one tool error listing every bad argument in our words
  (``mcp_server.arguments``), not pydantic's text.
- Unknown tool and prompt names, and prompt arguments that do not fit, are JSON-RPC "invalid params" errors
  naming what exists (the SDK answers an unknown prompt with error code 0 and logs a traceback).
- ``resources/list`` lists the audio of the most recent completed generations, newest first, so a client's
  resource picker shows them; every other job stays reachable through the URI templates.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, GetPromptResult, InputRequiredResult
from mcp_types import Resource as MCPResource
from pydantic import ValidationError

from mcp_server.arguments import describe_argument_errors
from mcp_server.service import JobService

RECENT_AUDIO_RESOURCES = 50  # resources/list stays small whatever the history holds


class MusicServer(MCPServer):
    def __init__(self, service: JobService, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.service = service

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        tool = self._tool_manager.get_tool(name)
        if tool is None:
            tools = ", ".join(t.name for t in self._tool_manager.list_tools())
            raise MCPError(INVALID_PARAMS, f"unknown tool {name!r}; this server's tools are: {tools}")
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError) and not isinstance(exc, UnexpectedToolError):
                raise ToolError(describe_argument_errors(name, exc.__cause__, tool.parameters)) from None
            raise

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None, context: Context[Any, Any] | None = None
    ) -> GetPromptResult | InputRequiredResult:
        prompt = self._prompt_manager.get_prompt(name)
        if prompt is None:
            names = ", ".join(p.name for p in self._prompt_manager.list_prompts())
            raise MCPError(INVALID_PARAMS, f"unknown prompt {name!r}; this server's prompts are: {names}")
        missing = [
            arg.name for arg in prompt.arguments or [] if arg.required and arg.name not in (arguments or {})
        ]
        if missing:
            raise MCPError(INVALID_PARAMS, f"prompt {name!r} needs the argument(s): {', '.join(missing)}")
        try:
            return await super().get_prompt(name, arguments, context)
        except ValueError as exc:  # the SDK's wrapper of a rendering failure: bad argument values
            cause = exc.__cause__
            text = (
                describe_argument_errors(name, cause, {}) if isinstance(cause, ValidationError) else str(exc)
            )
            raise MCPError(INVALID_PARAMS, text) from None

    async def list_resources(self) -> list[MCPResource]:
        jobs, _ = await self.service.history(None, "completed", RECENT_AUDIO_RESOURCES, None)
        audio = [
            MCPResource(
                uri=job.audio.uri,
                name=f"{job.job_id}.wav",
                title=job.prompt[:100],
                description=f"{job.audio.duration_s:g} s, {job.model}, {job.created_at:%Y-%m-%d %H:%M} UTC",
                mime_type="audio/wav",
            )
            for job in jobs
            if job.audio is not None
        ]
        return [*await super().list_resources(), *audio]
