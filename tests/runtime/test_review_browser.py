"""The review page in a real browser: Debian's chromium, driven by Selenium through Debian's chromedriver (both
installed by tools/system-deps.sh; nothing downloads a browser). ``edge-predict serve`` runs the fine-tuned
hymenoptera model on a video made of real val photos, captures its frames, and serves the page; the browser labels
three frames by clicking and one by key, and the files, the CSV and the page's counts must agree. An open page also
follows a hot reload to a model with other labels: its class buttons become the new model's.

``EDGEPORT_DOCS_SCREENSHOT=docs/review-page.png`` also writes the screenshot that docs/service.md shows."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from .mjpeg_server import free_port
from .test_review import V2_CLASSES, reloading_box

BIN = Path(sys.executable).parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.slow  # a fine-tuned model, a service process and a browser


def _missing(message: str) -> None:
    """Skipped on a developer's machine; a failure where everything must be installed (make test, CI)."""
    if os.environ.get("EDGEPORT_REQUIRE_DATA"):
        pytest.fail(message)
    pytest.skip(message)


def _browser():
    try:
        from selenium import webdriver
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[dev]')")
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        _missing("chromium and chromium-driver are not installed (make system-deps)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1250",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _video(path: Path, photos: list[Path]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (320, 240))
    assert writer.isOpened()
    for photo in photos:
        rgb = np.asarray(Image.open(photo).convert("RGB").resize((320, 240)))
        writer.write(np.ascontiguousarray(rgb[..., ::-1]))
    writer.release()
    return path


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as answer:
        return json.loads(answer.read())


def test_label_three_frames_by_clicking_in_chromium(finetuned_bundle, hymenoptera, tmp_path):
    photos = sorted((hymenoptera / "val" / "ants").glob("*.jpg"))[:5] + sorted((hymenoptera / "val" / "bees").glob("*.jpg"))[:5]
    truth = ["ants"] * 5 + ["bees"] * 5  # frame i of the video is photo i
    video = _video(tmp_path / "door.avi", photos)
    (tmp_path / "inbox").mkdir()  # a watched folder keeps the service up after the video ends
    port = free_port()
    proc = subprocess.Popen([BIN / "edge-predict", "serve", finetuned_bundle, "--model-format", "onnx", "--video", video,
                             "--name", f"door={video}", "--watch", tmp_path / "inbox", "--capture", tmp_path / "captures",
                             "--capture-below", "1.0", "--capture-rate", "600", "--ui-port", str(port), "--ui-dataset",
                             tmp_path / "dataset", "--output-format", "jsonl"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    driver = None
    try:
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            try:
                status = _status(port)
                if len(status["captures"]) == 10 and status["cameras"].get("door", {}).get("status") == "ended":
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert status and len(status["captures"]) == 10, status
        driver = _browser()
        driver.get(f"http://127.0.0.1:{port}/")
        assert driver.title == "edgeport review"
        tiles = driver.find_elements("css selector", "#grid .tile")
        assert len(tiles) == 10
        assert driver.find_element("css selector", '.cam[data-source="door"] dd[data-k="label"]').text in ("ants", "bees")

        def frame_of(tile) -> int:
            return int(tile.get_attribute("data-name").rsplit("_", 1)[1].removesuffix(".jpg"))

        chosen = [tiles[0], tiles[3], tiles[7]]
        expected = {}
        for tile in chosen:
            name, label = tile.get_attribute("data-name"), truth[frame_of(tile)]
            tile.find_element("css selector", f'button[data-label="{label}"]').click()
            expected[name] = label
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and driver.find_elements("css selector", f'.tile[data-name="{name}"]'):
                time.sleep(0.1)
        assert len(driver.find_elements("css selector", "#grid .tile")) == 7
        # one more by key: the selected tile (the one after the last click) gets class 1 ("ants") with the key 1
        selected = driver.find_element("css selector", ".tile.selected")
        key_name = selected.get_attribute("data-name")
        selected.send_keys("1")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and driver.find_elements("css selector", f'.tile[data-name="{key_name}"]'):
            time.sleep(0.1)
        expected[key_name] = "ants"

        dataset = tmp_path / "dataset"
        files = {p.name.removeprefix("door_"): p.parent.name for p in dataset.glob("*/*.jpg")}
        assert files == expected
        with open(dataset / "labels.csv", newline="") as fh:
            rows = {r["path"]: r["label"] for r in csv.DictReader(fh)}
        assert rows == {f"{label}/door_{name}": label for name, label in expected.items()}
        for name in expected:
            assert not (tmp_path / "captures" / "door" / name).exists()
        # read in one script: the page rebuilds the counts every 2 s, so elements found one by one can go stale
        shown = dict(driver.execute_script("return Array.from(document.querySelectorAll('#counts li'))"
                                           ".map(li => [li.dataset.class, Number(li.querySelector('b').textContent)])"))
        labelled = list(expected.values())
        assert shown["ants"] == labelled.count("ants") and shown["bees"] == labelled.count("bees")
        assert driver.find_element("css selector", "#waiting").text == "6 to label"
        assert driver.find_element("css selector", '.cam[data-source="door"] dd[data-k="score"]').text != "–"
        driver.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / "review-page.png"
        assert driver.save_screenshot(str(shot))
        with Image.open(shot) as image:
            assert image.size[0] >= 1000 and image.getextrema() != ((0, 0), (0, 0), (0, 0))
        if os.environ.get("EDGEPORT_DOCS_SCREENSHOT"):
            shutil.copy(shot, os.environ["EDGEPORT_DOCS_SCREENSHOT"])
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(20)


def _page_classes(driver) -> list[str]:
    return driver.execute_script("return Array.from(document.querySelectorAll('#grid .tile:first-child button'))"
                                 ".map(b => b.dataset.label)")


def test_an_open_page_takes_the_classes_of_a_hot_reloaded_model(tmp_path):
    driver = None
    with reloading_box(tmp_path) as box:
        box.wait_for_captures(1)
        try:
            driver = _browser()
            driver.get(f"http://127.0.0.1:{box.port}/")
            assert _page_classes(driver) == ["red", "green", "blue", "unknown", "delete"]
            box.switch_to_v2()
            deadline = time.monotonic() + 15  # the page asks /api/status every 2 s
            while time.monotonic() < deadline and _page_classes(driver)[:-2] != list(V2_CLASSES):
                time.sleep(0.2)
            assert _page_classes(driver) == [*V2_CLASSES, "unknown", "delete"]
            tile = driver.find_element("css selector", "#grid .tile")
            name = tile.get_attribute("data-name")
            tile.find_element("css selector", 'button[data-label="grey"]').click()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (tmp_path / "dataset" / "grey" / f"door_{name}").is_file():
                time.sleep(0.1)
            assert (tmp_path / "dataset" / "grey" / f"door_{name}").is_file()
        finally:
            if driver is not None:
                driver.quit()
