"""A real browser on the labeling page: Debian's headless Chromium through Selenium logs in with a token,
labels 10 posts with keys and clicks, and the database holds exactly those votes. The page at 1366x900 and
390x844: the submit control is inside the window, no model score before an answer, definitions beside the
labels, no image task on a text-only post, the next post opened at the top; screenshots go to the test's
folder (and to $XIMGCTX_SCREENSHOTS when set). Skipped, with the reason, where Chromium is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ximgctx.serve import ServeConfig, create_app

from .._inference_fixtures import model_dir
from .._queue_fixtures import make_store, public_posts
from .._serve_fixtures import API_KEY, running
from ..helpers import missing_service

pytestmark = pytest.mark.usefixtures("one_thread")

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SHOTS = Path("/tmp/ximgctx-queue-screens")


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a dev dependency")
    if not (CHROMIUM and DRIVER):
        missing_service(
            "Debian's chromium and chromium-driver are not installed (.ci/services.sh installs them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _wanted(i: int) -> dict:
    return {
        "meaning": ["literal", "ironic", "symbolic"][i % 3],
        "intent": ["joke"] if i % 2 else ["protest", "meme"],
        "objects": ["circle"] if i % 3 == 0 else [],
    }


def _inputs(driver, task: str, labels: list[str]):
    from selenium.webdriver.common.by import By

    return [
        driver.find_element(By.CSS_SELECTOR, f'fieldset[data-task="{task}"] input[value="{x}"]')
        for x in labels
    ]


def _moved_on(post_id: str | None):
    """A wait condition: the page shows another post than ``post_id``, or the empty-queue message. Chromium's
    driver may answer a lookup on a node the page just replaced with a generic inspector error rather than
    StaleElementReferenceException (so ``staleness_of`` can raise mid-swap): any driver error is "not yet"."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    def check(driver) -> bool:
        try:
            if driver.find_elements(By.ID, "empty"):
                return True
            shown = driver.find_elements(By.ID, "post")
            return bool(shown) and shown[0].get_attribute("data-item") != post_id
        except WebDriverException:
            return False

    return check


def test_label_ten_posts_with_keys_and_clicks(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.wait import WebDriverWait

    store = make_store(str(tmp_path / "q.sqlite"), overlap=1, gold_rate=0.0)
    posts = public_posts(10)
    for i, p in enumerate(posts):
        p.image = _png(tmp_path / f"{p.id}.png", i)
    posts[0].text = "when monday hits and the whole office shows up"
    assert store.enqueue(posts).added == 10
    token = store.add_labeler("browser-person")
    app = create_app(
        model_dir(), config=ServeConfig(api_keys=[f"{API_KEY} moderate,search,admin"]), queue=store
    )
    wait = WebDriverWait(browser, 60)
    expected = {}
    with running(app) as url:
        browser.get(f"{url}/queue")
        browser.find_element(By.ID, "token").send_keys("xq_wrong")
        browser.find_element(By.ID, "login-button").click()
        assert (
            "unknown or revoked" in wait.until(ec.presence_of_element_located((By.CLASS_NAME, "error"))).text
        )
        browser.find_element(By.ID, "token").send_keys(token)
        browser.find_element(By.ID, "login-button").click()
        for i in range(10):
            form = wait.until(ec.presence_of_element_located((By.ID, "vote")))
            post_id = browser.find_element(By.ID, "post").get_attribute("data-item")
            assert browser.find_element(By.ID, "post-image").get_property("naturalWidth") > 0
            if i == 0:
                SHOTS.mkdir(exist_ok=True)
                browser.save_screenshot(str(SHOTS / "page-desktop.png"))
                browser.set_window_size(390, 844)  # a phone
                width = browser.execute_script("return document.documentElement.scrollWidth")
                post_box = browser.find_element(By.ID, "post").rect
                vote_box = form.rect
                browser.save_screenshot(str(SHOTS / "page-phone.png"))
                browser.set_window_size(1280, 900)
                assert width <= 390  # nothing wider than the screen
                assert vote_box["y"] >= post_box["y"] + post_box["height"]  # one column: the form below
            want, note = _wanted(i), f"note {i}: the replies read it this way"
            picks = _inputs(browser, "meaning", [want["meaning"]]) + _inputs(
                browser, "intent", want["intent"]
            )
            picks += _inputs(browser, "objects", want["objects"])
            if i % 2 == 0:  # keys only
                body = browser.find_element(By.TAG_NAME, "body")
                body.send_keys("".join(x.get_attribute("data-key") for x in picks))
                body.send_keys("n")
                browser.switch_to.active_element.send_keys(note)
                browser.switch_to.active_element.send_keys(Keys.CONTROL, Keys.ENTER)
            else:  # clicks
                for x in picks:
                    x.click()
                browser.find_element(By.ID, "note").send_keys(note)
                browser.find_element(By.ID, "submit").click()
            wait.until(_moved_on(post_id))
            expected[int(post_id)] = (want, note)
        wait.until(ec.presence_of_element_located((By.ID, "empty")))
    rows = store.vote_rows()
    ids = {v.post_id: k for k, v in _items(store).items()}
    got = {(ids[r["post_id"]], r["task"], _norm(r["label"]), r["note"]) for r in rows}
    assert got == {
        (item, task, _norm(label), note)
        for item, (want, note) in expected.items()
        for task, label in want.items()
    }
    assert len(rows) == 30 and len(expected) == 10


def _norm(label):
    return tuple(sorted(label)) if isinstance(label, list) else label


def _items(store):
    from ximgctx.queue.models import Item

    with store.sessions() as s:
        return {i.id: i for i in s.query(Item)}


def _png(path: Path, i: int) -> str:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (320, 240), (40 + 20 * i, 90, 160))
    d = ImageDraw.Draw(im)
    d.ellipse([60, 40, 200, 180], fill=(250, 210, 40))
    d.rectangle([180, 120, 300, 220], fill=(30, 30, 30))
    im.save(path)
    return str(path)


def test_a_vote_on_the_page_changes_the_next_moderation_of_a_near_duplicate(browser, tmp_path):
    memory_module = pytest.importorskip(
        "ximgctx.inference.memory", reason="the label memory inside Predictor lands with the inference branch"
    )
    assert memory_module.LabelMemory
    import base64

    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.wait import WebDriverWait

    store = make_store(str(tmp_path / "q.sqlite"), overlap=1, gold_rate=0.0)
    (post,) = public_posts(1, "near")
    post.image = _png(tmp_path / "near.png", 3)
    post.text = "everyone meet at the square at noon, bring signs"
    store.enqueue([post], source="review")
    token = store.add_labeler("memory-person")
    # the operator's memory, centred on a sample of the pool (one post alone cannot centre it)
    from ximgctx import Predictor

    from .._inference_fixtures import make_posts

    predictor = Predictor.from_pretrained(model_dir())
    memory = memory_module.LabelMemory.for_predictor(predictor)
    memory.set_center(predictor.embed(make_posts(48, seed=7, folder="centre")))
    memory.save(tmp_path / "memory")
    from ximgctx.queue.loop import LabelRule, LoopState

    loop = LoopState(store)
    loop.set_rule(LabelRule(k=1), who="ops", why="one labeler decides in this test")  # default: k=2
    app = create_app(
        predictor,
        config=ServeConfig(api_keys=[f"{API_KEY} moderate,search,admin"]),
        queue=store,
        memory=tmp_path / "memory",
    )

    def moderate(url: str, text: str, image: Path) -> dict:
        data = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
        body = {
            "input": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": data}}],
            "ximgctx": {"replies": [r.text for r in post.replies]},  # the same replies as the queued post
        }
        r = httpx.post(
            f"{url}/v1/moderations", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
        )
        assert r.status_code == 200, r.text
        return r.json()["results"][0]["category_scores"]

    far_image = Path(_png(tmp_path / "far.png", 9))
    with running(app) as url:
        near_text = post.text + "!"  # a near-duplicate: same image, one character more
        before = moderate(url, near_text, Path(post.image)), moderate(url, "a quiet cat asleep", far_image)
        wait = WebDriverWait(browser, 60)
        browser.get(f"{url}/queue")
        browser.find_element(By.ID, "token").send_keys(token)
        browser.find_element(By.ID, "login-button").click()
        wait.until(ec.presence_of_element_located((By.ID, "vote")))
        post_id = browser.find_element(By.ID, "post").get_attribute("data-item")
        for x in _inputs(browser, "meaning", ["literal"]) + _inputs(browser, "intent", ["threat"]):
            x.click()
        browser.find_element(By.ID, "note").send_keys("a call to gather with a threat in the replies")
        browser.find_element(By.ID, "submit").click()
        wait.until(_moved_on(post_id))
        after = moderate(url, near_text, Path(post.image)), moderate(url, "a quiet cat asleep", far_image)
    assert len(store.vote_rows()) == 3
    assert len(memory_module.LabelMemory.load(tmp_path / "memory")) == 0  # files: a base, not the truth
    assert [e.labels["intent"] for e in loop.effective()[1]] == [["threat"]]  # the store holds the label
    assert after[0] != before[0]  # the near-duplicate moved at once
    assert after[1] == before[1]  # the far post did not


# ---------------------------------------------------------------------------------- layout and anchoring
DESKTOP, PHONE = (1366, 900), (390, 844)


def _viewport(driver, size: tuple[int, int]) -> None:
    """The page's viewport exactly ``size`` (CSS pixels), a phone as a mobile device."""
    width, height = size
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 700},
    )


def _shot(driver, tmp_path: Path, name: str) -> None:
    driver.save_screenshot(str(tmp_path / f"{name}.png"))
    folder = os.environ.get("XIMGCTX_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


_IN_VIEW = """
const b = document.getElementById('submit').getBoundingClientRect();
const x = (b.left + b.right) / 2, y = (b.top + b.bottom) / 2;
const hit = document.elementFromPoint(x, y);
return {top: b.top, bottom: b.bottom, left: b.left, right: b.right, w: innerWidth, h: innerHeight,
        scrollWidth: document.documentElement.scrollWidth, scrollY: scrollY,
        onTop: !!hit && !!hit.closest('#submit')};
"""


def _check_layout(driver, size: tuple[int, int]) -> dict:
    """The submit control wholly inside the viewport and not covered; nothing wider than the screen."""
    box = driver.execute_script(_IN_VIEW)
    assert (box["w"], box["h"]) == size
    assert 0 <= box["top"] < box["bottom"] <= box["h"], box
    assert 0 <= box["left"] < box["right"] <= box["w"], box
    assert box["onTop"], box  # the button itself is what a tap there reaches
    assert box["scrollWidth"] <= size[0], box
    return box


def _no_scores(driver) -> None:
    from selenium.webdriver.common.by import By

    assert driver.find_elements(By.CSS_SELECTOR, ".score, .bar") == []
    text = driver.find_element(By.TAG_NAME, "body").text
    assert "score" not in text.lower()


def _labeling_app(tmp_path: Path, show_scores: str):
    """A queue with one post with an image and one without, and a labeler's token."""
    store = make_store(str(tmp_path / "q.sqlite"), overlap=1, gold_rate=0.0, show_scores=show_scores)
    with_image, text_only = public_posts(2, "lay")
    with_image.image = _png(tmp_path / "lay.png", 2)
    with_image.text = "sunset over the square, a heart painted on the wall: we will be back"
    text_only.text = "they say the storm is over. sure it is."
    assert store.enqueue([with_image]).added == 1 and store.enqueue([text_only]).added == 1
    token = store.add_labeler("layout-person")
    app = create_app(
        model_dir(), config=ServeConfig(api_keys=[f"{API_KEY} moderate,search,admin"]), queue=store
    )
    return store, app, token


def _login(browser, url: str, token: str, wait):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser.get(f"{url}/queue")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "login-button").click()
    return wait.until(ec.presence_of_element_located((By.ID, "vote")))


def test_the_form_fits_desktop_and_phone_without_scores_and_with_definitions(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.wait import WebDriverWait

    store, app, token = _labeling_app(tmp_path, "never")
    wait = WebDriverWait(browser, 60)
    with running(app) as url:
        _login(browser, url, token, wait)
        first = browser.find_element(By.ID, "post").get_attribute("data-item")
        assert browser.find_element(By.ID, "post").get_attribute("data-image") == "yes"
        wait.until(lambda d: d.find_element(By.ID, "post-image").get_property("naturalWidth") > 0)
        for size, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
            _viewport(browser, size)
            _check_layout(browser, size)
            _no_scores(browser)
            _shot(browser, tmp_path, f"queue-{name}-image-post")
        # definitions beside every label, the task's question above them, a "can't tell" per task
        defs = {
            e.find_element(By.XPATH, "..")
            .find_element(By.CSS_SELECTOR, "input")
            .get_attribute("value"): e.text
            for e in browser.find_elements(By.CSS_SELECTOR, "fieldset.task .option:not(.cant) .def")
        }
        assert set(defs) == {"circle", "square", "star", "literal", "ironic", "symbolic"} | {
            "joke",
            "protest",
            "threat",
            "meme",
        }
        assert "stands for an idea" in defs["symbolic"]
        assert len(browser.find_elements(By.CSS_SELECTOR, "fieldset.task .question")) == 3
        assert len(browser.find_elements(By.CSS_SELECTOR, "input.cant-tell")) == 3
        progress = browser.find_element(By.ID, "progress")
        assert progress.get_attribute("data-done") == "0" and progress.get_attribute("data-total") == "2"
        # keys: meaning, intent "can't tell", objects circle; then Enter, from the bottom of the page
        key = {
            x.get_attribute("value")
            if not x.get_attribute("data-task")
            else "cant:" + x.get_attribute("data-task"): (x.get_attribute("data-key"))
            for x in browser.find_elements(By.CSS_SELECTOR, "fieldset.task input")
        }
        browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        assert browser.execute_script("return scrollY") > 0  # the phone page is taller than its window
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys(key["symbolic"] + key["cant:intent"] + key["circle"])
        body.send_keys("\n")
        wait.until(_moved_on(first))
        # the next post (no image) opens at the top: no objects question, and a vote without it is stored
        assert browser.execute_script("return scrollY") == 0
        assert browser.find_element(By.ID, "post").get_attribute("data-image") == "no"
        assert browser.find_elements(By.CSS_SELECTOR, 'fieldset[data-task="objects"]') == []
        assert browser.find_elements(By.ID, "no-image")
        assert browser.find_element(By.ID, "progress").get_attribute("data-done") == "1"
        for size, name in ((PHONE, "phone"), (DESKTOP, "desktop")):
            _viewport(browser, size)
            _check_layout(browser, size)
            _no_scores(browser)
            _shot(browser, tmp_path, f"queue-{name}-text-post")
        second = browser.find_element(By.ID, "post").get_attribute("data-item")
        for x in _inputs(browser, "meaning", ["ironic"]) + _inputs(browser, "intent", ["joke"]):
            x.click()
        browser.find_element(By.ID, "submit").click()
        wait.until(ec.presence_of_element_located((By.ID, "empty")))
    votes = {(r["post_id"], r["task"]): r["label"] for r in store.vote_rows()}
    assert votes == {
        ("lay0", "meaning"): "symbolic",
        ("lay0", "objects"): ["circle"],
        ("lay1", "meaning"): "ironic",
        ("lay1", "intent"): ["joke"],
    }
    assert [(r["post_id"], r["task"], r["reason"]) for r in store.abstention_rows()] == [
        ("lay0", "intent", "cant_tell")
    ]
    assert int(second) != int(first)
    assert sorted(p.name for p in tmp_path.glob("queue-*.png")) == [
        "queue-desktop-image-post.png",
        "queue-desktop-text-post.png",
        "queue-phone-image-post.png",
        "queue-phone-text-post.png",
    ]


def test_scores_after_the_answer_only(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    store, app, token = _labeling_app(tmp_path, "after")
    wait = WebDriverWait(browser, 60)
    with running(app) as url:
        _login(browser, url, token, wait)
        _viewport(browser, DESKTOP)
        first = browser.find_element(By.ID, "post").get_attribute("data-item")
        _no_scores(browser)  # not before the answer
        picks = _inputs(browser, "meaning", ["literal"]) + _inputs(browser, "intent", ["protest"])
        for x in picks:
            x.click()
        browser.find_element(By.ID, "submit").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".score"))
        shown = browser.find_elements(By.CSS_SELECTOR, "fieldset.task .score")
        assert len(shown) == 3 + 3 + 4  # every label of the three tasks, beside the answer that was stored
        assert all(0.0 <= float(x.text) <= 1.0 for x in shown)
        assert "Next" in browser.find_element(By.ID, "submit").text
        assert all(not x.is_enabled() for x in picks)  # the stored answer is not editable any more
        _check_layout(browser, DESKTOP)
        _shot(browser, tmp_path, "queue-desktop-scores-after-answer")
        browser.find_element(By.TAG_NAME, "body").send_keys("\n")
        wait.until(_moved_on(first))
        _no_scores(browser)  # the next post: hidden again
    assert len(store.vote_rows()) == 3  # objects: [] (none ticked) is an answer too
