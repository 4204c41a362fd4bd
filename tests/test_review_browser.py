"""The review page in a real browser (Debian's headless Chromium, driven by selenium
through Debian's chromedriver), on the sample run, reviewed while it runs and after."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, List

import pytest

from facemoment.tools.review.server import ReviewServer

from conftest import PYTHON, REPO, free_port
from review_helpers import add_highlight, trigger_row

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = REPO / "docs" / "review-page.png"
# Bounded waits on the page's DOM (the machine may be busy; these are upper bounds).
WAIT_S = 60


def _triggers(out: Path) -> List[dict]:
    return [json.loads(line) for line in (out / "triggers.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> Dict[str, object]:
    """`facemoment process sample --ui`: the page while the sample runs, then the finished run.

    The page is asked for its state while the run writes; once the summary is printed
    the page keeps serving until Ctrl-C, which ends it.
    """
    out = tmp_path_factory.mktemp("review") / "out"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEMOMENT", "BYTEWAX"))}
    proc = subprocess.Popen(
        [PYTHON, "-m", "facemoment", "process", "sample", "--preset", "batch,lean", "--output-dir", str(out),
         "--ui", "--ui-port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: List[str] = []
    announced, lingering = threading.Event(), threading.Event()
    states: List[dict] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("review page: ") and not announced.is_set():
                announced.set()
                try:
                    with urllib.request.urlopen(line.split()[2] + "api/state", timeout=60) as response:
                        states.append(json.load(response))  # while the run goes on
                except (OSError, ValueError) as exc:
                    states.append({"error": repr(exc)})
            if "the run has ended; Ctrl-C stops the page" in line:
                lingering.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert lingering.wait(600), "".join(lines)[-4000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=60) as response:
            after = json.load(response)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, "".join(lines)[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(60)
    return {"out": out, "port": port, "lines": lines, "during": states, "after": after}


def test_ui_serves_the_page_while_the_run_writes_and_after_until_ctrl_c(sample_run):
    out, port, lines = sample_run["out"], sample_run["port"], sample_run["lines"]
    text = "".join(lines)
    assert f"review page: http://127.0.0.1:{port}/\n" in text
    assert text.index("review page: ") < text.index("FaceMoment run summary") < text.index("the run has ended")
    during = sample_run["during"]
    assert len(during) == 1 and "error" not in during[0], during  # the page answered during the run
    assert set(during[0]) == {"run", "highlights", "cameras"}
    after = sample_run["after"]
    assert [h["key"] for h in after["highlights"]] == [t["key"] for t in _triggers(out)]
    assert after["run"]["why"] and after["cameras"][0]["camera"] == "cam0"
    with pytest.raises(OSError):  # Ctrl-C ended the page too
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=10)


@pytest.fixture(scope="session")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), (
        "chromium and chromium-driver are installed by the project's set-up (scripts/test.sh)"
    )
    os.environ["SE_OFFLINE"] = "true"  # selenium never looks for a driver of its own
    profile = tempfile.mkdtemp(prefix="review-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                 "--window-size=1280,1400", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition, message=what)


def _cards(driver) -> List[str]:
    return driver.execute_script("return [...document.querySelectorAll('#cards .card')].map(c => c.dataset.key)")


def test_the_finished_sample_run_in_a_browser(sample_run, browser):
    out = sample_run["out"]
    triggers = _triggers(out)
    assert triggers, "the sample gives highlights"
    long_ago = time.time() - 3600  # written an hour ago: the page calls the run finished
    for f in out.rglob("*.jsonl"):
        os.utime(f, (long_ago, long_ago))
    with ReviewServer(out, port=0) as server:
        browser.get(server.url)
        _wait(browser, lambda d: len(_cards(d)) == len(triggers), "one card per line of triggers.jsonl")
        # Newest first, each with its best still loaded and its TRIG text.
        assert _cards(browser) == [t["key"] for t in sorted(triggers, key=lambda t: t["written_at"], reverse=True)]
        _wait(browser, lambda d: d.execute_script(
            "return [...document.querySelectorAll('#cards .card img')].every(i => i.complete && i.naturalWidth > 0)"
            " && document.querySelectorAll('#cards .card img').length == arguments[0]", len(triggers)), "stills loaded")
        texts = browser.execute_script("return [...document.querySelectorAll('#cards .card code')].map(c => c.textContent)")
        assert sorted(texts) == sorted(t["message"] for t in triggers)
        # The camera's panel: live figures, gate, timeline with the triggers; the finished run's "why".
        panel = browser.execute_script("return document.querySelector('.camera[data-camera=\"cam0\"]').innerText")
        assert "frames / s" in panel and "gate" in panel and "last trigger" in panel
        ticks = browser.execute_script("return document.querySelectorAll('.camera svg line.trig').length")
        assert ticks == len(triggers)
        assert browser.execute_script("return document.getElementById('why').hidden") is False
        assert browser.find_element("id", "run-state").text == "finished"
        # Filters: a reason nobody had leaves no card; back to all.
        from selenium.webdriver.support.ui import Select

        Select(browser.find_element("id", "filter-camera")).select_by_value("cam0")
        assert len(_cards(browser)) == len(triggers)
        if SCREENSHOT.exists() and os.environ.get("FACEMOMENT_UPDATE_SCREENSHOT") != "1":
            target = Path(tempfile.mkdtemp()) / "review-page.png"
        else:
            target = SCREENSHOT  # README's picture, from this run
        assert browser.save_screenshot(str(target))
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # A click plays the clip in the page: its time advances.
        first = browser.find_element("css selector", "#cards .card .media")
        first.click()
        video = _wait(browser, lambda d: d.find_element("css selector", "#cards .card video"), "a video element")
        _wait(browser, lambda d: d.execute_script(
            "const v = arguments[0]; return v.error === null && v.currentTime > 0.5", video), "the clip plays")
        assert browser.execute_script("return arguments[0].error", video) is None


def test_a_new_highlight_appears_live(sample_run, browser, tmp_path):
    source = Path(sample_run["out"])
    out = tmp_path / "out"
    shutil.copytree(source, out)
    clips = sorted((out / "clips").glob("*.mp4"))
    stills = sorted((out / "clips").glob("*.jpg"))
    with ReviewServer(out, port=0) as server:
        browser.get(server.url)
        before = len(_triggers(out))
        _wait(browser, lambda d: len(_cards(d)) == before, "the run's cards")
        row = trigger_row("cam1", 3_000_000_000, reason="wave", score=0.91, written_at="2099-01-01T00:00:00.000+00:00")
        add_highlight(out, row)  # the trigger first, as a run writes it: its clip is pending
        _wait(browser, lambda d: _cards(d)[:1] == [row["key"]], "the new card, first")
        add_highlight(out / "_", dict(row), clips[0], stills[0])  # then its clip and still
        for f in (out / "_" / "clips").iterdir():
            if f.suffix in (".mp4", ".jpg"):
                shutil.move(str(f), out / "clips" / f.name)
        line = (out / "_" / "clips" / "clips.jsonl").read_text()
        with open(out / "clips" / "clips.jsonl", "a") as manifest:
            manifest.write(line)
        _wait(browser, lambda d: d.execute_script(
            "const c = document.querySelector(`.card[data-key='${arguments[0]}'] img`);"
            " return c !== null && c.complete && c.naturalWidth > 0", row["key"]), "its still")
        cameras = browser.execute_script("return [...document.querySelectorAll('#filter-camera option')].map(o => o.value)")
        assert "cam1" in cameras
