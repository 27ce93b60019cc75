"""The studio in a real browser: Debian's chromium, headless, driven by Playwright (no downloaded browser).

Through the page only, at a phone's width and by keyboard: generate, watch the progress bar finish over the
event stream, play the take (its duration is the job's), search the history, export to Ardour (the zip
downloads). A server with a token: the page asks for it once and keeps it for the tab.

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
from mcp_testing import TOKEN, http_server

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
