"""The lineage side of Store: a generation's children, its whole family tree (see storage.lineage), and
deleting a generation with or without what derives from it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from storage import files
from storage.core import Generation, StoreCore
from storage.db import announce, run_transaction
from storage.errors import HasChildren, StorageError
from storage.models import GenerationRow
from storage.rows import existing_row


class Families(StoreCore):
    """Walks the parent links with recursive CTEs, so a family is one statement on SQLite and PostgreSQL."""

    def children(self, generation_id: str) -> list[Generation]:
        """The generations made directly from this one (stems, edits, continuations...), oldest first."""

        def work(session: Session) -> list[Generation]:
            existing_row(session, generation_id)
            return [self._snapshot(row) for row in session.scalars(_children(generation_id))]

        return run_transaction(self.engine, work, write=False)

    def family(self, generation_id: str) -> list[Generation]:
        """The whole family of a piece: its root (the generation with no parent above this one) and every
        descendant of the root, oldest first, so each parent comes before its children. Any member's id
        gives the same family. Build the tree with each member's `lineage.parent_id`."""

        def work(session: Session) -> list[Generation]:
            existing_row(session, generation_id)
            members = select(GenerationRow).where(GenerationRow.id.in_(_family_ids(generation_id)))
            rows = session.scalars(members.order_by(GenerationRow.created_at, GenerationRow.id))
            return [self._snapshot(row) for row in rows]

        return run_transaction(self.engine, work, write=False)

    def delete(self, generation_id: str, *, with_descendants: bool = False) -> list[str]:
        """Delete a generation (and, with `with_descendants`, everything derived from it: its stems,
        edits, continuations and theirs); returns the ids deleted, the given one first.

        Refused with `HasChildren` while other generations derive from it and `with_descendants` is False,
        or when a generation outside the deleted set used one of them as its conditioning source. The rows
        go in one statement (all or none); the files are removed after the commit, so a crash in between
        leaves orphan files for recover() to quarantine, never a row pointing at a missing file. A job still
        processing is deleted too: its complete() then fails."""

        def work(session: Session) -> tuple[list[str], list[str]]:
            existing_row(session, generation_id)
            if with_descendants:
                below = (
                    select(GenerationRow.id)
                    .where(
                        GenerationRow.id.in_(_descendant_ids(generation_id)),
                        GenerationRow.id != generation_id,
                    )
                    .order_by(GenerationRow.created_at, GenerationRow.id)
                )
                ids = [generation_id, *session.scalars(below)]
            else:
                ids = [generation_id]
                children = list(session.scalars(_children(generation_id).with_only_columns(GenerationRow.id)))
                if children:
                    raise HasChildren(generation_id, children)
            users = list(
                session.scalars(
                    select(GenerationRow.id).where(
                        GenerationRow.source_job_id.in_(ids), GenerationRow.id.not_in(ids)
                    )
                )
            )
            if users:
                raise HasChildren(generation_id, users, as_source=True)
            paths = list(
                session.scalars(
                    select(GenerationRow.file_path).where(
                        GenerationRow.id.in_(ids), GenerationRow.file_path.is_not(None)
                    )
                )
            )
            session.execute(delete(GenerationRow).where(GenerationRow.id.in_(ids)))
            announce(session, ids)
            return ids, [str(path) for path in paths]

        ids, paths = run_transaction(self.engine, work, write=True)
        failed = []
        for relative in paths:
            try:
                files.remove(self.absolute(relative))
            except OSError as error:
                failed.append(f"{relative} ({error.strerror})")
        if failed:
            raise StorageError(
                f"deleted {len(ids)} generation(s) but could not remove {len(failed)} file(s): "
                f"{', '.join(failed)}; recover() moves them to quarantine/ at the next start"
            )
        return ids


def _children(generation_id: str) -> Select[GenerationRow]:
    return (
        select(GenerationRow)
        .where(GenerationRow.parent_id == generation_id)
        .order_by(GenerationRow.created_at, GenerationRow.id)
    )


def _descendant_ids(root: Any) -> Select[Any]:
    """Ids of `root` (an id, or a scalar subquery giving one) and everything below it: a recursive CTE
    (SQLite and PostgreSQL). Parent links always point at older rows, so the walk cannot loop."""
    tree = select(GenerationRow.id).where(GenerationRow.id == root).cte("descendants", recursive=True)
    tree = tree.union_all(select(GenerationRow.id).join(tree, GenerationRow.parent_id == tree.c.id))
    return select(tree.c.id)


def _family_ids(generation_id: str) -> Select[Any]:
    """Walk up the parent links to the root, then down from it: one statement with two recursive CTEs."""
    up = (
        select(GenerationRow.id, GenerationRow.parent_id)
        .where(GenerationRow.id == generation_id)
        .cte("ancestors", recursive=True)
    )
    up = up.union_all(
        select(GenerationRow.id, GenerationRow.parent_id).join(up, GenerationRow.id == up.c.parent_id)
    )
    root = select(up.c.id).where(up.c.parent_id.is_(None)).scalar_subquery()
    return _descendant_ids(root)
