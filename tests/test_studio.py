"""The studio in a real browser: Debian's chromium, headless, driven by Playwright (no downloaded browser).

Through the page only, at a phone's width and by keyboard: generate, watch the progress bar finish over the
event stream, play the take (its duration is the job's), search the history, export to Ardour (the zip
downloads). A server with a token: the page asks for it once and keeps it for the tab. The form follows the
model catalogue (ACE-Step's song fields, MusicGen's sampling ones), and each job's actions (extend, use as
start, edit section, stems, family, delete) go through the REST API on one shared server with the
operator's tiny ACE-Step, melody and Demucs checkpoints.

Set DGX_MUSIC_STUDIO_SCREENSHOT=docs/studio.png to refresh the README's screenshot.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp_testing import TOKEN, http_server, wait_healthy

from engine.acestep.checkpoints import build_random_checkpoint as build_song_checkpoint
from engine.demucs.checkpoints import build_random_separator

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags that let Debian's chromium run headless as root in a container without touching the network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
PHONE = {"width": 375, "height": 812}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        missing = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"CI must have a browser: {missing}")
        pytest.skip(missing)
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # an empty profile: no state between runs
            executable_path=CHROMIUM,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport=PHONE,
            accept_downloads=True,
        )
        yield context
        context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.close()
    assert errors == [], errors


def open_studio(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=60_000)


def test_generate_play_search_and_export_through_the_page(
    page: Any, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    with http_server(tmp_path / "home", tiny_checkpoint) as (url, _):
        other = httpx.post(f"{url}/api/v1/generate", json={"prompt": "unrelated polka", "duration": 1})
        assert other.status_code == 202
        open_studio(page, url + "/")

        # By keyboard: tab into the form, type, press Enter on the button.
        page.focus("#prompt")
        page.keyboard.type("studio bossa nova with nylon guitar")
        page.keyboard.press("Tab")
        page.keyboard.press("Control+A")
        page.keyboard.type("2")
        page.focus("#generate-button")
        page.keyboard.press("Enter")

        bar = page.locator("#progress-list progress").first
        page.wait_for_selector("#progress-list progress[data-status=completed]", timeout=120_000)
        assert bar.evaluate("bar => bar.value === bar.max")

        item = page.locator(".job", has_text="studio bossa nova").first
        item.wait_for(timeout=30_000)
        job_id = item.get_attribute("data-job-id")
        job = httpx.get(f"{url}/api/v1/jobs/{job_id}").json()
        assert job["status"] == "completed"
        played = item.locator("audio").evaluate(
            """async audio => {
                audio.muted = true;
                await audio.play();
                await new Promise(resolve => setTimeout(resolve, 300));
                const error = audio.error && audio.error.code;
                return {duration: audio.duration, time: audio.currentTime, error};
            }"""
        )
        assert played["error"] is None
        assert played["duration"] == pytest.approx(job["audio"]["duration_s"], abs=0.01)
        assert played["time"] > 0
        assert int(item.locator("canvas.wave").get_attribute("data-points") or 0) > 0
        assert "LUFS" in item.locator(".facts").inner_text()

        page.fill("#search", "bossa")
        page.press("#search", "Enter")
        page.wait_for_function(
            """() => {
                const list = document.querySelector('#history-list');
                const prompts = [...list.querySelectorAll('.job .prompt')].map(p => p.textContent);
                return list.getAttribute('aria-busy') === 'false' && prompts.length > 0
                    && prompts.every(p => p.includes('bossa'));
            }"""
        )
        assert page.locator(".job").count() == 1

        item = page.locator(".job", has_text="studio bossa nova").first
        item.locator(".pick").check()
        page.fill("#session-name", "browser session")
        with page.expect_download(timeout=60_000) as download_info:
            page.click("#export-button")
        download = download_info.value
        assert download.suggested_filename == "browser session.zip"
        names = zipfile.ZipFile(io.BytesIO(Path(download.path()).read_bytes())).namelist()
        assert "browser session/browser session.ardour" in names

        # Usable at 375 px: nothing wider than the screen.
        too_wide = page.evaluate(
            """width => [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > width + 0.5)
                .map(e => e.tagName + '#' + e.id + '.' + e.className)""",
            PHONE["width"],
        )
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], too_wide
        page.set_viewport_size({"width": 1280, "height": 800})
        page.evaluate("window.scrollTo(0, 0)")
        screenshot = os.environ.get("DGX_MUSIC_STUDIO_SCREENSHOT")
        page.screenshot(path=screenshot or str(tmp_path / "studio.png"))


def test_the_page_asks_for_the_token_once_and_a_deep_link_shows_the_job(
    page: Any, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    with http_server(tmp_path / "home", tiny_checkpoint, token=TOKEN) as (url, _):
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        queued = httpx.post(
            f"{url}/api/v1/generate", json={"prompt": "token jazz", "duration": 1}, headers=bearer
        )
        [job] = queued.json()["jobs"]
        done = httpx.get(
            f"{url}/api/v1/jobs/{job['job_id']}", params={"wait": 120}, headers=bearer, timeout=150
        )
        assert done.json()["status"] == "completed"

        page.goto(f"{url}/#job={job['job_id']}")
        page.wait_for_selector("#token-dialog[open]", timeout=60_000)
        page.fill("#token", TOKEN)
        page.press("#token", "Enter")
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        item = page.locator(f".job.focus[data-job-id='{job['job_id']}']")
        item.wait_for(timeout=30_000)
        assert page.evaluate("sessionStorage.getItem('dgx-music-token')") == TOKEN
        page.wait_for_function(
            "id => document.querySelector(`.job[data-job-id='${id}'] audio`).src.startsWith('blob:')",
            arg=job["job_id"],
        )
        duration = item.locator("audio").evaluate(
            "audio => audio.readyState > 0 ? audio.duration : new Promise(resolve => "
            "audio.addEventListener('loadedmetadata', () => resolve(audio.duration), {once: true}))"
        )
        assert duration == pytest.approx(1.0, abs=0.01)

        page.reload()  # the same tab keeps the token: no second question
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        assert not page.locator("#token-dialog[open]").count()


@pytest.fixture(scope="module")
def studio(
    tiny_checkpoint: Path, tiny_melody_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One server for the form and action tests: MusicGen by default, the operator's tiny ACE-Step,
    melody and Demucs checkpoints under their aliases, and an empty Hugging Face cache."""
    root = tmp_path_factory.mktemp("studio")
    song = build_song_checkpoint(root / "acestep-tiny", audio_tokenizer=True)  # it can remix
    separator = build_random_separator(root / "htdemucs-tiny")
    paths = f"ace-step={song},melody={tiny_melody_checkpoint},htdemucs={separator}"
    extra = {"DGX_MUSIC_MODEL_PATHS": paths, "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1"}
    with http_server(root / "home", tiny_checkpoint, **extra) as (url, _):
        wait_healthy(url)
        yield url


def test_the_form_follows_the_chosen_model(page: Any, studio: str) -> None:
    open_studio(page, studio + "/")
    default = page.locator("#model option:checked")
    assert "(default)" in default.inner_text() and default.get_attribute("value") == ""
    assert page.locator("#param-top_k").count() == 1
    assert page.get_attribute("#duration", "max") == "300"
    assert page.locator("#param-lyrics").count() == 0

    page.select_option("#model", "ace-step")
    for name in ("lyrics", "bpm", "key", "time_signature", "vocal_language", "steps"):
        assert page.locator(f"#param-{name}").is_visible(), name
    assert page.evaluate("document.querySelector('#param-lyrics').tagName") == "TEXTAREA"
    assert page.locator("#param-time_signature option").all_inner_texts()[1:] == ["2", "3", "4", "6"]
    for name in ("top_k", "top_p", "temperature", "context_seconds", "guidance_scale"):
        assert not page.locator(f"#param-{name}").is_visible(), name
    assert (page.get_attribute("#duration", "min"), page.get_attribute("#duration", "max")) == ("10", "600")
    assert page.input_value("#duration") == "30"
    assert not page.locator("#continue_from").is_visible()

    page.select_option("#model", "medium")  # published, not in this server's cache: the pull command shows
    assert "dgx-music pull medium" in page.inner_text("#model-hint")
    assert "not downloaded" in page.locator("#model option:checked").inner_text()
    assert page.locator("#param-top_k").is_visible() and page.locator("#continue_from").is_visible()

    page.select_option("#model", "melody")
    assert page.get_attribute("#duration", "max") == "300" and page.locator("#melody_from").is_visible()
    assert page.locator("#continue_from").is_visible()  # melody checkpoints continue audio too

    # an API refusal names the argument next to the form
    page.select_option("#model", "ace-step")
    page.fill("#prompt", "a song")
    page.fill("#param-bpm", "500")
    page.click("#generate-button")
    error = page.locator("#generate-error")
    error.wait_for(timeout=30_000)
    assert "bpm" in error.inner_text()
    assert page.get_attribute("#param-bpm", "aria-invalid") == "true"


def completed_job(page: Any, url: str, prompt: str) -> dict[str, Any]:
    item = page.locator(".job", has_text=prompt).first
    item.wait_for(timeout=120_000)
    return dict(httpx.get(f"{url}/api/v1/jobs/{item.get_attribute('data-job-id')}", timeout=30).json())


def wait_for_progress(page: Any, count: int) -> None:
    """Until ``count`` progress bars have ended (each reaches completed, failed or cancelled)."""
    page.wait_for_function(
        """count => [...document.querySelectorAll('#progress-list progress')]
            .filter(bar => ['completed', 'failed', 'cancelled'].includes(bar.dataset.status))
            .length >= count""",
        arg=count,
        timeout=180_000,
    )


def answer(dialog: Any, questions: list[str], *, accept: bool) -> None:
    questions.append(dialog.message)
    if accept:
        dialog.accept()
    else:
        dialog.dismiss()


def wait_until(page: Any, condition: Any, timeout_s: float = 30) -> None:
    for _ in range(int(timeout_s * 10)):
        if condition():
            return
        page.wait_for_timeout(100)  # lets the page's events (a dialog) reach their handlers
    raise AssertionError("timed out")


def test_extend_family_stems_and_delete_from_the_history(page: Any, studio: str) -> None:
    open_studio(page, studio + "/")
    page.fill("#prompt", "studio actions surf rock")
    page.fill("#duration", "1")
    page.click("#generate-button")
    wait_for_progress(page, 1)
    source = completed_job(page, studio, "studio actions surf rock")
    assert source["status"] == "completed"
    item = page.locator(f".job[data-job-id='{source['job_id']}']")

    # what the chosen model takes: start from it (a text model), not follow it as a melody
    assert item.locator(".use-start").is_visible() and not item.locator(".use-melody").is_visible()
    item.locator(".use-start").click()
    assert page.input_value("#continue_from") == source["job_id"]
    assert page.inner_text("#duration-label") == "Seconds to add (1–300 s)"
    page.select_option("#model", "melody")
    # a melody checkpoint does both: follow the take as a tune, or continue it
    assert item.locator(".use-melody").is_visible() and item.locator(".use-start").is_visible()
    page.select_option("#model", "")

    # a refused section edit says why, next to the action
    item.locator("button.edit").click()
    item.locator("input[name=start_s]").fill("0.8")
    item.locator("input[name=end_s]").fill("0.2")
    item.locator(".action-box button[type=submit]").click()
    error = item.locator(".action-error")
    error.wait_for(timeout=30_000)
    assert "end_s" in error.inner_text() or "start_s" in error.inner_text(), error.inner_text()

    item.locator("button.extend").click()
    item.locator("input[name=seconds]").fill("1")
    item.locator(".action-box button[type=submit]").click()
    wait_for_progress(page, 2)
    history = httpx.get(f"{studio}/api/v1/history", params={"q": "surf"}, timeout=30).json()["items"]
    [child] = [job for job in history if (job["lineage"] or {}).get("parent_id") == source["job_id"]]
    assert child["status"] == "completed" and child["lineage"]["operation"] == "continue"
    assert child["audio"]["duration_s"] == pytest.approx(source["audio"]["duration_s"] + 1, abs=0.05)

    child_item = page.locator(f".job[data-job-id='{child['job_id']}']")
    child_item.wait_for(timeout=30_000)
    assert source["job_id"][:8] in child_item.locator(".lineage").inner_text()
    child_item.locator("button.family").click()
    members = child_item.locator(".family-tree .member")
    members.first.wait_for(timeout=30_000)
    assert [m.get_attribute("data-job-id") for m in members.all()] == [source["job_id"], child["job_id"]]
    assert members.nth(1).get_attribute("aria-current") == "true"
    members.first.click()  # shows the source, focused
    page.wait_for_selector(f".job.focus[data-job-id='{source['job_id']}']", timeout=30_000)
    assert page.evaluate("document.activeElement.dataset.jobId") == source["job_id"]

    item = page.locator(f".job[data-job-id='{source['job_id']}']").first
    item.locator("button.stems").click()
    assert "(default)" in item.locator("select[name=model] option:checked").inner_text()
    item.locator(".action-box button[type=submit]").click()
    wait_for_progress(page, 6)  # the source, its extension and four stems
    for stem in ("drums", "bass", "other", "vocals"):
        page.locator(".job", has_text=f"studio actions surf rock ({stem})").first.wait_for(timeout=30_000)

    # a leaf: asked plainly, dismissed, nothing deleted; then the source: asked about its family, deleted
    questions: list[str] = []
    leaf = page.locator(".job", has_text="(drums)").first
    page.once("dialog", lambda dialog: answer(dialog, questions, accept=False))
    leaf.locator("button.delete").click()
    wait_until(page, lambda: len(questions) == 1)  # the question comes once the family is read
    assert questions[0].startswith("Delete") and "derived" not in questions[0]
    item = page.locator(f".job[data-job-id='{source['job_id']}']").first
    page.once("dialog", lambda dialog: answer(dialog, questions, accept=True))
    item.locator("button.delete").click()
    wait_until(page, lambda: len(questions) == 2)
    page.wait_for_function(
        "id => !document.querySelector(`.job[data-job-id='${id}']`)", arg=source["job_id"], timeout=30_000
    )
    assert "5 generation(s) derived from it" in questions[1]
    left = httpx.get(f"{studio}/api/v1/history", params={"q": "surf"}, timeout=30).json()["items"]
    assert left == []


def test_a_song_is_remixed_not_extended(page: Any, studio: str) -> None:
    queued = httpx.post(
        f"{studio}/api/v1/generate",
        json={"prompt": "studio song", "model": "ace-step", "lyrics": "[verse]\nla la", "duration": 10},
        timeout=30,
    )
    assert queued.status_code == 202, queued.text
    [song] = queued.json()["jobs"]
    done = httpx.get(f"{studio}/api/v1/jobs/{song['job_id']}", params={"wait": 240}, timeout=260).json()
    assert done["status"] == "completed", done
    open_studio(page, studio + "/")
    item = page.locator(f".job[data-job-id='{song['job_id']}']")
    assert item.locator("button.remix").is_visible() and not item.locator("button.extend").count()

    item.locator("button.remix").click()
    assert item.locator("input[name=prompt]").input_value() == "studio song"
    assert item.locator("input[name=strength]").input_value() == "0.5"  # the API's default
    item.locator("input[name=prompt]").fill("studio song, as a tango")
    item.locator(".action-box button[type=submit]").click()
    wait_for_progress(page, 1)
    remix = completed_job(page, studio, "as a tango")
    assert remix["status"] == "completed", remix
    assert remix["lineage"] == {**remix["lineage"], "operation": "remix", "parent_id": song["job_id"]}
