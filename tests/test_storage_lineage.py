"""Lineage rows, family queries and the family rule for deletes, on SQLite and on PostgreSQL.

The PostgreSQL variants run on conftest's throw-away server and skip where there are no binaries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from storage import Generation, HasChildren, Lineage, NotFound, Operation, Status, StorageError, Store, db
from storage import files as storage_files

MODEL = "facebook/musicgen-small"
STEMS = ("drums", "bass", "other", "vocals")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, data_home: Path) -> Iterator[Store]:
    url = request.getfixturevalue("postgres_database") if request.param == "postgresql" else None
    store = Store(data_home, url)
    yield store
    store.close()


def completed(store: Store, prompt: str, lineage: Lineage | None = None, model: str = MODEL) -> Generation:
    job = store.create(prompt, model, {"duration": 1.0}, lineage=lineage)
    [claimed] = store.claim(model, 1)
    assert claimed.id == job.id
    audio = np.full((1, 3200), 0.1, np.float32)
    return store.complete(
        job.id, audio, 32000, loudness_lufs=None, peak_dbfs=None, generation_seconds=0.1, device="cpu", seed=1
    )


def song_with_parts(store: Store) -> dict[str, Generation]:
    """A song, its four stems (queued in one transaction), an edit of it and a continuation of the edit."""
    song = completed(store, "lofi piano at night")
    stems = store.create_many(
        "htdemucs",
        [(f"lofi piano at night ({stem})", {}) for stem in STEMS],
        lineages=[Lineage(Operation.STEMS, parent_id=song.id, stem=stem) for stem in STEMS],
    )
    edit = completed(
        store,
        "lofi piano, brighter bridge",
        Lineage(Operation.EDIT, parent_id=song.id, section_start_s=3.0, section_end_s=6.0),
    )
    longer = completed(store, "lofi piano, longer", Lineage(Operation.CONTINUE, parent_id=edit.id))
    return {"song": song, **dict(zip(STEMS, stems, strict=True)), "edit": edit, "longer": longer}


def test_lineage_is_recorded_and_read_back(store: Store) -> None:
    parts = song_with_parts(store)
    song, drums, edit, longer = parts["song"], parts["drums"], parts["edit"], parts["longer"]
    assert store.get(song.id).lineage == Lineage()
    assert store.get(song.id).lineage.operation is Operation.GENERATE
    assert store.get(drums.id).lineage == Lineage(
        Operation.STEMS, parent_id=song.id, source_job_id=song.id, stem="drums"
    )
    assert store.get(edit.id).lineage.operation is Operation.EDIT
    assert (store.get(edit.id).lineage.section_start_s, store.get(edit.id).lineage.section_end_s) == (
        3.0,
        6.0,
    )
    assert store.get(longer.id).lineage.source_job_id == edit.id
    assert store.get(drums.id).model_name == "htdemucs" and drums.status is Status.PENDING

    digest = hashlib.sha256(b"my humming").hexdigest()
    hummed = store.create(
        "strings following my humming",
        MODEL,
        {},
        lineage=Lineage(Operation.MELODY, source_file_name="humming.wav", source_file_sha256=digest),
    )
    assert store.get(hummed.id).lineage == Lineage(
        Operation.MELODY, source_file_name="humming.wav", source_file_sha256=digest
    )
    assert store.family(hummed.id) == [store.get(hummed.id)]  # a file source starts a family of its own


def test_children_and_family(store: Store) -> None:
    parts = song_with_parts(store)
    song, edit, longer = parts["song"], parts["edit"], parts["longer"]
    unrelated = completed(store, "drum solo")

    assert [g.id for g in store.children(song.id)] == [parts[s].id for s in (*STEMS, "edit")]
    assert [g.id for g in store.children(edit.id)] == [longer.id]
    assert store.children(longer.id) == []
    everyone = [g.id for g in parts.values()]
    for member in parts.values():  # any member names the same family, parents before children
        assert [g.id for g in store.family(member.id)] == everyone
    assert [g.id for g in store.family(unrelated.id)] == [unrelated.id]
    with pytest.raises(NotFound, match="no generation"):
        store.family("00000000-0000-0000-0000-000000000000")
    with pytest.raises(NotFound, match="no generation"):
        store.children("00000000-0000-0000-0000-000000000000")


def test_unknown_parent_or_source_is_refused_and_nothing_is_queued(store: Store) -> None:
    song = completed(store, "a song")
    ghost = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(NotFound, match="parent_id '00000000-"):
        store.create_many(
            "htdemucs",
            [("drums", {}), ("bass", {})],
            lineages=[
                Lineage(Operation.STEMS, parent_id=song.id, stem="drums"),
                Lineage(Operation.STEMS, parent_id=ghost, stem="bass"),
            ],
        )
    with pytest.raises(NotFound, match="source_job_id '00000000-"):
        store.create(
            "x", MODEL, {}, lineage=Lineage(Operation.MELODY, parent_id=song.id, source_job_id=ghost)
        )
    assert store.count() == 1
    with pytest.raises(ValueError, match="lineages: pass one per job"):
        store.create_many("m", [("a", {}), ("b", {})], lineages=[Lineage()])


def test_delete_with_children_is_refused_unless_the_descendants_go_too(store: Store) -> None:
    parts = song_with_parts(store)
    song, edit, longer = parts["song"], parts["edit"], parts["longer"]
    unrelated = completed(store, "drum solo")
    files = {name: g.file_path for name, g in parts.items() if g.file_path}
    assert all(path is not None and path.is_file() for path in files.values())

    with pytest.raises(HasChildren, match=f"generation {song.id} has 5 generation") as refused:
        store.delete(song.id)
    assert refused.value.dependants == [parts[s].id for s in (*STEMS, "edit")]
    with pytest.raises(HasChildren, match="delete its whole family"):
        store.delete(edit.id)
    assert store.count() == 8 and all(path.is_file() for path in files.values())  # nothing was touched

    assert store.delete(edit.id, with_descendants=True) == [edit.id, longer.id]
    assert not files["edit"].exists() and not files["longer"].exists()
    assert store.delete(parts["drums"].id) == [parts["drums"].id]  # a leaf goes alone

    deleted = store.delete(song.id, with_descendants=True)
    assert deleted[0] == song.id and set(deleted) == {song.id, *(parts[s].id for s in STEMS[1:])}
    assert not files["song"].exists()
    assert [g.id for g in store.history().items] == [unrelated.id]
    assert unrelated.file_path is not None and unrelated.file_path.is_file()
    with pytest.raises(NotFound):
        store.delete(song.id, with_descendants=True)


def test_a_source_used_outside_the_family_cannot_be_deleted(store: Store) -> None:
    theme = completed(store, "a theme to follow")
    other = completed(store, "another piece")
    follower = store.create(
        "strings on the theme",
        MODEL,
        {},
        lineage=Lineage(Operation.MELODY, parent_id=other.id, source_job_id=theme.id),
    )
    with pytest.raises(HasChildren, match="conditioning source of 1 generation") as refused:
        store.delete(theme.id, with_descendants=True)
    assert refused.value.dependants == [follower.id] and refused.value.as_source
    assert store.delete(other.id, with_descendants=True) == [other.id, follower.id]
    assert store.delete(theme.id) == [theme.id]


def test_the_database_refuses_what_the_store_would(store: Store) -> None:
    """The constraints hold for any writer, not only through Lineage's checks."""
    song = completed(store, "a song")
    bad_rows = {
        "unknown operation": "operation = 'karaoke'",
        "stems without a stem": "operation = 'stems', parent_id = :song",
        "edit without a section": "operation = 'edit', parent_id = :song",
        "reversed section": "operation = 'edit', parent_id = :song, section_start_s = 5, section_end_s = 2",
        "missing parent": "parent_id = '00000000-0000-0000-0000-000000000000', operation = 'continue'",
        "file without digest": "operation = 'melody', source_file_name = 'x.wav'",
    }
    for reason, assignment in bad_rows.items():
        with store.engine.begin() as connection, pytest.raises(IntegrityError):
            connection.execute(
                text(f"UPDATE generations SET {assignment} WHERE id = :song"), {"song": song.id}
            )
            pytest.fail(f"the database accepted: {reason}")
    assert store.get(song.id).lineage == Lineage()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"operation": "karaoke"}, "operation='karaoke' is not an operation"),
        ({"operation": "stems", "parent_id": "p"}, "stem is required with operation 'stems'"),
        ({"operation": "stems", "parent_id": "p", "stem": "Drums!"}, "stem='Drums!' must be"),
        ({"operation": "edit", "parent_id": "p"}, "needs section_start_s and section_end_s"),
        ({"operation": "edit", "parent_id": "p", "section_start_s": 4, "section_end_s": 4}, "below"),
        ({"operation": "edit", "section_start_s": 1, "section_end_s": 2}, "needs parent_id"),
        ({"operation": "continue"}, "needs a source"),
        ({"operation": "generate", "parent_id": "p"}, "from text alone"),
        ({"stem": "drums"}, "only there"),
        ({"section_start_s": 1.0, "section_end_s": 2.0}, "belong to operation 'edit' only"),
        ({"operation": "melody", "source_file_name": "a.wav"}, "source_file_sha256 must be"),
        (
            {
                "operation": "melody",
                "source_job_id": "j",
                "source_file_name": "a",
                "source_file_sha256": "0" * 64,
            },
            "exclusive",
        ),
    ],
)
def test_lineage_errors_name_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Lineage(**fields)  # type: ignore[arg-type]


def test_upgrade_from_0003_keeps_rows_as_generations(data_home: Path) -> None:
    engine = db.make_engine(db.database_url(data_home))
    db.upgrade(engine, data_home, "0003")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO generations (id, prompt, model_name, status, created_at, attempts) "
                "VALUES ('0b3c9a55-8d2e-4a1c-9f61-2f0f7a4b2c11', 'before lineage', 'm', 'pending', "
                ":created, 0)"
            ),
            {"created": "2026-11-30 10:00:00.000000"},
        )
    engine.dispose()

    store = Store(data_home)
    assert db.current_revision(store.engine) == db.head_revision()  # 0004 and everything after it
    old = store.get("0b3c9a55-8d2e-4a1c-9f61-2f0f7a4b2c11")
    assert old.lineage == Lineage() and store.children(old.id) == []
    # The table was copied on SQLite: full-text search must still follow inserts, updates and deletes.
    child = store.create("a continuation", "m", {}, lineage=Lineage(Operation.CONTINUE, parent_id=old.id))
    assert [g.id for g in store.history(query="continuation").items] == [child.id]
    assert [g.id for g in store.history(query="lineage").items] == [old.id]
    store.delete(old.id, with_descendants=True)
    assert store.history(query="continuation").items == []


def test_a_file_that_cannot_be_removed_is_left_for_recovery(
    data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(data_home)
    song = completed(store, "a song")
    edit = completed(
        store, "an edit", Lineage(Operation.EDIT, parent_id=song.id, section_start_s=0.0, section_end_s=0.05)
    )
    assert song.file_path is not None and edit.file_path is not None
    real_remove = storage_files.remove

    def remove(path: Path) -> None:
        if path == edit.file_path:
            raise PermissionError(13, "Permission denied")
        real_remove(path)

    monkeypatch.setattr(storage_files, "remove", remove)
    with pytest.raises(StorageError, match=r"deleted 2 generation\(s\) but could not remove 1 file"):
        store.delete(song.id, with_descendants=True)
    assert store.count() == 0 and not song.file_path.exists() and edit.file_path.exists()
    monkeypatch.undo()
    [quarantined] = store.recover().quarantined
    assert quarantined.name == edit.file_path.name and not edit.file_path.exists()
