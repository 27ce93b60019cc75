"""ACE-Step parameters: validation with field-named errors, names and licences (no model is loaded)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.acestep import models
from engine.acestep.request import KEYS, CheckpointTraits, operations, parameters, validate
from engine.backend import InvalidRequest

TURBO = CheckpointTraits(
    "ACE-Step/acestep-v15-xl-turbo-diffusers", uses_cfg=False, default_steps=8, can_remix=False
)
BASE = CheckpointTraits(
    "ACE-Step/acestep-v15-xl-base-diffusers", uses_cfg=True, default_steps=8, can_remix=True
)


def _fields(error: pytest.ExceptionInfo[InvalidRequest]) -> dict[str, str]:
    return {item.field: item.message for item in error.value.errors}


def test_a_song_request_with_every_parameter() -> None:
    request = validate(
        "generate",
        {
            "prompt": "dreamy synth pop",
            "lyrics": "[verse]\nCity lights\n\n[chorus]\nSing it loud",
            "duration": 20,
            "bpm": 96,
            "key": "a  MINOR",
            "time_signature": "3",
            "vocal_language": "EN",
            "steps": 12,
            "seed": 5,
        },
        TURBO,
    )
    assert (request.duration, request.bpm, request.key, request.time_signature) == (20.0, 96, "A minor", 3)
    assert (request.vocal_language, request.steps, request.seed, request.guidance_scale) == ("en", 12, 5, 1.0)
    assert request.task == "text2music" and request.samples == 960_000 and request.loudness_lufs == -14.0


def test_defaults_come_from_the_checkpoint_and_empty_lyrics_mean_instrumental() -> None:
    turbo = validate("generate", {"prompt": "ambient"}, TURBO)
    base = validate("generate", {"prompt": "ambient", "guidance_scale": 4.5}, BASE)
    assert (turbo.lyrics, turbo.steps, turbo.guidance_scale, turbo.duration) == ("", 8, 1.0, 30.0)
    assert base.guidance_scale == 4.5
    assert validate("generate", {"prompt": "ambient", "loudness_lufs": None}, TURBO).loudness_lufs is None


def test_every_bad_field_is_named_with_its_range() -> None:
    with pytest.raises(InvalidRequest) as error:
        validate(
            "generate",
            {
                "prompt": " ",
                "lyrics": "x" * 4001,
                "duration": 5,
                "bpm": 500,
                "key": "H major",
                "time_signature": 5,
                "vocal_language": "xx",
                "steps": 0,
                "seed": -1,
                "loudness_lufs": 0,
            },
            TURBO,
        )
    fields = _fields(error)
    assert set(fields) == {
        "prompt", "lyrics", "duration", "bpm", "key", "time_signature", "vocal_language", "steps", "seed",
        "loudness_lufs",
    }  # fmt: skip
    assert "[10, 600]" in fields["duration"] and "5" in fields["duration"]
    assert "[30, 300]" in fields["bpm"] and "500" in fields["bpm"]
    assert "4,000 characters" in fields["lyrics"]
    assert "[1, 100]" in fields["steps"]
    assert "2, 3, 4, 6" in fields["time_signature"]
    assert "'H major'" in fields["key"] and "C major" in fields["key"]


def test_section_tags_must_stand_alone_in_brackets() -> None:
    with pytest.raises(InvalidRequest) as error:
        validate("generate", {"prompt": "rock", "lyrics": "[verse\nhello"}, TURBO)
    assert "line 1" in _fields(error)["lyrics"] and "[verse]" in _fields(error)["lyrics"]


def test_the_other_familys_parameters_are_refused_by_name() -> None:
    with pytest.raises(InvalidRequest) as error:
        validate(
            "generate", {"prompt": "rock", "top_k": 250, "temperature": 1.0, "guidance_scale": 3.0}, TURBO
        )
    fields = _fields(error)
    assert "MusicGen parameter" in fields["top_k"] and "MusicGen parameter" in fields["temperature"]
    assert "guidance-distilled" in fields["guidance_scale"] and "ace-step-base" in fields["guidance_scale"]
    with pytest.raises(InvalidRequest) as error:
        validate("generate", {"prompt": "rock", "start_s": 1.0, "colour": "red"}, TURBO)
    assert "does not apply to generate" in _fields(error)["start_s"]
    assert "not an ACE-Step parameter" in _fields(error)["colour"]


def test_operations_and_remix_needs_the_audio_tokenizer() -> None:
    assert operations(TURBO) == {"generate", "edit"} and operations(BASE) == {"generate", "edit", "remix"}
    with pytest.raises(InvalidRequest) as error:
        validate("remix", {"prompt": "jazz"}, TURBO)
    message = _fields(error)["operation"]
    assert TURBO.model_id in message and "audio_tokenizer" in message and "-diffusers" in message
    with pytest.raises(InvalidRequest) as error:
        validate("sing", {}, TURBO)
    assert "generate, edit, remix" in _fields(error)["operation"]


def test_edit_takes_any_rate_mono_or_stereo_and_checks_the_section() -> None:
    mono = np.zeros(32_000 * 4, dtype=np.float32)
    request = validate(
        "edit", {"source_audio": mono, "source_sample_rate": 32_000, "start_s": 1, "end_s": 2}, TURBO
    )
    assert request.source is not None and request.source.shape == (2, 48_000 * 4)
    assert (request.duration, request.task, request.crossfade_s, request.loudness_lufs) == (
        4.0,
        "repaint",
        0.1,
        None,
    )
    with pytest.raises(InvalidRequest) as error:
        validate(
            "edit", {"source_audio": mono, "source_sample_rate": 32_000, "start_s": 1, "end_s": 9}, TURBO
        )
    assert "4.00 s" in _fields(error)["end_s"]
    with pytest.raises(InvalidRequest) as error:
        validate("edit", {"source_audio": mono, "source_sample_rate": 32_000, "duration": 10}, TURBO)
    assert set(_fields(error)) == {"duration", "start_s", "end_s"}
    with pytest.raises(InvalidRequest) as error:
        validate("edit", {"source_audio": np.zeros((3, 48_000)), "source_sample_rate": 48_000}, TURBO)
    assert "mono or stereo" in _fields(error)["source_audio"]


def test_capabilities_list_every_parameter_with_ranges() -> None:
    turbo, base = parameters(TURBO), parameters(BASE)
    assert "guidance_scale" not in turbo and "strength" not in turbo
    assert (base["guidance_scale"].minimum, base["guidance_scale"].maximum) == (1, 15)
    assert (turbo["duration"].minimum, turbo["duration"].maximum) == (10.0, 600.0)
    assert turbo["lyrics"].maximum == 4000 and turbo["steps"].default == 8
    assert turbo["key"].choices == KEYS and "F# minor" in KEYS and len(KEYS) == 34
    assert "en" in turbo["vocal_language"].choices


def test_aliases_licences_and_pull_commands() -> None:
    assert models.resolve_model_id("ACE-Step") == models.TURBO == "ACE-Step/acestep-v15-xl-turbo-diffusers"
    assert models.resolve_model_id("ace-step-base") == models.BASE
    assert models.resolve_model_id("/some/dir") == "/some/dir"
    assert str(models.licence_of("ace-step")) == "MIT" and models.licence_of(models.BASE).commercial_use
    assert models.licence_of("someone/else").commercial_use is None
    assert models.pull_command("ace-step-base") == "dgx-music pull ace-step-base"
    assert models.pull_command("/tmp/anything") == "dgx-music pull ace-step"
