"""Lineage: how a generation was derived (its parent, the operation, what conditioned it).

A generation's parent is the job it was made from (the clip it continues, the song it edits or splits
into stems). Parents are fixed when a row is created and point at an older row, so the parent links form
a forest: a piece's *family* is one tree, its root the first generation (made from text or an input file).
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

STEM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_FILE_NAME = 255


class Operation(enum.StrEnum):
    GENERATE = "generate"  # from text alone
    CONTINUE = "continue"  # the source's audio, extended
    MELODY = "melody"  # conditioned on the source's melody (chroma)
    EDIT = "edit"  # one section of the parent regenerated (section_start_s..section_end_s)
    STEMS = "stems"  # one stem separated out of the parent
    REMIX = "remix"  # the parent re-made in another style (cover)


# Operations made from another generation; continue and melody may instead come from an input file.
NEEDS_PARENT = frozenset({Operation.EDIT, Operation.STEMS, Operation.REMIX})
NEEDS_SOURCE = frozenset({Operation.CONTINUE, Operation.MELODY})


@dataclass(frozen=True)
class Lineage:
    """How one generation was derived. Built through the constructor, which validates it (each error
    names the field); ``Lineage()`` is a plain generation from text.

    `source_job_id` (or the input file's name and sha256) is the audio that conditioned the generation.
    When a parent is given without a source, the parent's audio is the source.
    """

    operation: Operation = Operation.GENERATE
    parent_id: str | None = None
    source_job_id: str | None = None
    source_file_name: str | None = None
    source_file_sha256: str | None = None
    stem: str | None = None  # operation "stems": the stem's name, e.g. "drums"
    section_start_s: float | None = None  # operation "edit": the regenerated section, in seconds
    section_end_s: float | None = None

    def __post_init__(self) -> None:
        try:
            operation = Operation(self.operation)
        except ValueError:
            allowed = ", ".join(op.value for op in Operation)
            raise ValueError(
                f"operation={self.operation!r} is not an operation; use one of: {allowed}"
            ) from None
        object.__setattr__(self, "operation", operation)
        has_file = self.source_file_name is not None or self.source_file_sha256 is not None
        if self.source_job_id is None and not has_file and self.parent_id is not None:
            object.__setattr__(self, "source_job_id", self.parent_id)
        self._check_source(has_file)
        self._check_operation(operation, has_file)

    def _check_source(self, has_file: bool) -> None:
        if has_file:
            if self.source_job_id is not None:
                raise ValueError(
                    "source_job_id and source_file_name/source_file_sha256 are exclusive: a generation is "
                    "conditioned on one job or on one input file"
                )
            name, digest = self.source_file_name, self.source_file_sha256
            if not name or not name.strip() or len(name) > MAX_FILE_NAME:
                raise ValueError(
                    f"source_file_name must be the input file's name (1-{MAX_FILE_NAME} characters), "
                    f"given with its source_file_sha256 (got {name!r})"
                )
            if digest is None or not SHA256_HEX.fullmatch(digest):
                raise ValueError(
                    f"source_file_sha256 must be 64 lowercase hex digits, given with source_file_name "
                    f"(got {digest!r})"
                )

    def _check_operation(self, operation: Operation, has_file: bool) -> None:
        if operation is Operation.GENERATE and (self.parent_id or self.source_job_id or has_file):
            raise ValueError(
                "operation 'generate' is from text alone: it takes no parent_id or source; use 'continue', "
                "'melody', 'edit', 'stems' or 'remix' for a generation made from other audio"
            )
        if operation in NEEDS_PARENT and self.parent_id is None:
            raise ValueError(f"operation {operation.value!r} needs parent_id: the job it was made from")
        if operation in NEEDS_SOURCE and self.source_job_id is None and not has_file:
            raise ValueError(
                f"operation {operation.value!r} needs a source: parent_id/source_job_id, or "
                "source_file_name with source_file_sha256"
            )
        if (operation is Operation.STEMS) != (self.stem is not None):
            raise ValueError(
                "stem is required with operation 'stems' and only there"
                f" (operation {operation.value!r}, stem {self.stem!r})"
            )
        if self.stem is not None and not STEM_NAME.fullmatch(self.stem):
            raise ValueError(
                f"stem={self.stem!r} must be 1-32 lowercase letters, digits, '-' or '_', e.g. 'drums'"
            )
        section = (self.section_start_s, self.section_end_s)
        if operation is not Operation.EDIT:
            if section != (None, None):
                raise ValueError("section_start_s/section_end_s belong to operation 'edit' only")
            return
        start, end = section
        if start is None or end is None or not (math.isfinite(start) and math.isfinite(end)):
            raise ValueError("operation 'edit' needs section_start_s and section_end_s (seconds)")
        if not 0.0 <= start < end:
            raise ValueError(f"section_start_s must be >= 0 and below section_end_s (got {start} and {end})")
