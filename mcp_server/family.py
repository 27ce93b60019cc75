"""A piece's family as an indented tree: each job under the job it was made from (continued, edited, ...)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mcp_server.schemas import Job


def family_tree(members: Sequence[Job], entry: Callable[[Job], str]) -> str:
    """``members`` (parents before children, as ``Store.family`` orders them) drawn with ``entry`` for
    each job, indented two spaces per generation below the root, the operation named on each child."""
    depth: dict[str, int] = {}
    blocks = []
    for job in members:
        parent = job.lineage.parent_id if job.lineage is not None else None
        level = depth[parent] + 1 if parent in depth else 0
        depth[job.job_id] = level
        how = f"{job.lineage.operation} of {parent[:8]}: " if job.lineage is not None and parent else ""
        indent = "    " * level
        lines = entry(job).rstrip("\n").splitlines()
        lines[0] = how + lines[0]
        blocks.append("\n".join(indent + line for line in lines))
    return "\n".join(blocks) + "\n"
