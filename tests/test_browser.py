"""Chapters 01 and 04 in a real browser: JupyterLab on a local port, driven in headless Chromium by Playwright.

tests/test_widgets.py drives the ranking widget from Python; this file checks what only a browser shows: that
the widget renders in JupyterLab, that a learner's clicks reach the kernel and end up in `my_rankings.jsonl`,
and that chapter 04's live dashboard redraws while PPO trains.

The browser is Debian's `chromium` (`apt-get install -y chromium`; .ci/run installs it), launched by Playwright's
Python package through `executable_path`: nothing is downloaded (never `playwright install`). Without it, the
tests skip. The widget's screenshots go to the test's tmp folder; `LABKIT_UPDATE_SCREENSHOTS=1` writes them to
docs/screenshots/ instead, where the README shows them.
"""

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from labkit import pairs, presets, reward_model, shipped

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "docs" / "screenshots"
WAIT_MS = 600_000  # for cells and PPO steps: a tiny-preset step takes 1.5-2 s on 2 idle cores, up to 35 s on busy ones
expect.set_options(timeout=60_000)  # Playwright's default 5 s is short for a kernel starting on a busy machine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.is_file(), reason="Debian's chromium is not installed: apt-get install -y chromium"
    ),
]


@dataclass
class Lab:
    """A running JupyterLab: its address and token, and the chapters' LABKIT_WORKDIR."""

    url: str
    token: str
    workdir: Path

    def api(self, method: str, path: str) -> object:
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self) -> None:
        for kernel in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{kernel['id']}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving copies of chapters 01 and 04 (the browser saves outputs into them), on a free port."""
    tmp = tmp_path_factory.mktemp("lab")
    root, workdir, runtime, settings = (tmp / name for name in ("notebooks", "workdir", "runtime", "settings"))
    root.mkdir()
    for name in ("01_generate_and_rank.ipynb", "04_ppo.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, root / name)
    # No "get Jupyter news?" toast over the widget; the server-side switches below keep it off the network.
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')
    env = dict(
        os.environ,
        LAB_PRESET="tiny",
        LABKIT_WORKDIR=str(workdir),  # the kernels inherit the server's environment
        JUPYTER_RUNTIME_DIR=str(runtime),  # the server info file (its port) and the kernels' connection files
        JUPYTER_CONFIG_DIR=str(tmp / "config"),  # no user config
        IPYTHONDIR=str(tmp / "ipython"),  # no user startup files
    )
    env.pop("MPLBACKEND", None)  # chapter 04's `%matplotlib inline`, as in a learner's JupyterLab
    token = secrets.token_hex(16)
    command = [
        str(Path(sys.executable).parent / "jupyter"),
        "lab",
        "--no-browser",
        "--ServerApp.open_browser=False",
        "--allow-root",  # JupyterLab refuses to start as root without it (CI runs as root); harmless otherwise
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=0",  # the OS picks a free port; the server writes it to its info file
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly",  # the default manager asks PyPI for extensions
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
    ]
    with open(tmp / "jupyter.log", "w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield Lab(_wait_for_server(server, runtime, token, Path(log.name)), token, workdir)
        finally:
            server.terminate()  # the server shuts its kernels down on SIGTERM
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_for_server(server: subprocess.Popen, runtime: Path, token: str, log: Path, timeout: float = 120) -> str:
    """The server's address once it answers /api/status; fails with its log if it exits or stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"jupyter lab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        info = sorted(runtime.glob("jpserver-*.json"))
        if info:
            url = f"http://127.0.0.1:{json.loads(info[0].read_text())['port']}"
            try:
                request = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(request, timeout=5):
                    return url
            except OSError:
                pass
        time.sleep(0.2)  # nothing to wait on but the server itself
    pytest.fail(f"jupyter lab did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        # Playwright starts Chromium with --no-sandbox unless chromium_sandbox=True, which lets it run as root.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, lab):
    """A fresh browser tab; afterwards the kernels it started are shut down, so the next test has the CPU."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()
    lab.shut_down_kernels()


def open_and_run_all(page: Page, lab: Lab, name: str) -> None:
    """Open a notebook in JupyterLab, wait for its kernel, and press Run > Run All Cells."""
    # One fresh workspace per notebook (`reset`): JupyterLab reopens no tab of an earlier test.
    page.goto(f"{lab.url}/lab/workspaces/{Path(name).stem}/tree/{name}?token={lab.token}&reset")
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Python 3 (ipykernel) | Idle")
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def code_cell(page: Page, source: str):
    """The code cell whose source contains `source`."""
    return page.locator(".jp-CodeCell", has=page.locator(".jp-InputArea", has_text=source))


def wait_for_all_cells(page: Page) -> None:
    """Until the last code cell has run; fails at once with the traceback if a cell raises instead."""
    done = page.locator(".jp-CodeCell").last.locator(".jp-InputPrompt", has_text=re.compile(r"\[\d+\]"))
    error = page.locator(".jp-OutputArea-output", has_text="Traceback")
    done.or_(error).first.wait_for(state="attached", timeout=WAIT_MS)
    assert 0 == error.count(), error.first.text_content()


def screenshot(element, name: str, tmp_path: Path) -> None:
    folder = SCREENSHOTS if os.environ.get("LABKIT_UPDATE_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    element.screenshot(path=folder / name, animations="disabled", caret="hide")


def shown_item(widget) -> tuple[str, list[str], list[str]]:
    """(item id, completion ids, completion texts) of the item the widget shows.

    Text content, not innerText: JupyterLab lays out off-screen cells lazily (content-visibility), and
    innerText of a cell that was never on screen is empty.
    """
    item_id = re.search(r"Prompt \((\S+)\):", widget.text_content()).group(1)
    replies = widget.locator(":scope > .widget-vbox > .widget-vbox .widget-html-content")
    ids = [text.removeprefix("Reply ") for text in replies.locator("b").all_text_contents()]
    return item_id, ids, replies.locator("pre").all_text_contents()


def test_a_learner_ranks_two_items_in_chapter_01(lab, page, tmp_path):
    """Ranks chosen with the widget's controls in the browser: two complete rankings (a tie, a flag) are written
    to my_rankings.jsonl as shown, and an incomplete one is refused in red with nothing written."""
    open_and_run_all(page, lab, "01_generate_and_rank.ipynb")
    wait_for_all_cells(page)
    widget = code_cell(page, "my_widget = widgets.ranking_widget").locator(".jp-OutputArea-output > .widget-vbox")
    rows = widget.locator(":scope > .widget-vbox > .widget-vbox")  # one per reply: its text, rank, flags
    status = widget.locator(":scope > .widget-html").last
    submit = widget.get_by_role("button", name="Submit")
    store = lab.workdir / "01" / "my_rankings.jsonl"
    expect(widget).to_contain_text("you: 0 of 12 ranked (item 1 of 12)")
    first, first_ids, first_texts = shown_item(widget)
    assert 4 == rows.count() == len(first_ids)

    # 1. the first item: replies 1 and 2 tied, the last flagged unsafe; Submit saves it and shows the next item
    for row, rank in zip(rows.all(), ("1", "2", "2", "4")):
        row.locator("select").select_option(rank)
    rows.nth(3).get_by_label("unsafe").check()
    screenshot(widget, "ranking-widget-before-submit.png", tmp_path)
    submit.click()
    expect(status).to_have_text(f"Saved item {first}.")
    expect(widget).to_contain_text("you: 1 of 12 ranked (item 2 of 12)")
    screenshot(widget, "ranking-widget-after-submit.png", tmp_path)
    assert 1 == len(store.read_text().splitlines())

    # 2. the second item, two replies of four ranked: refused in red, nothing written, the item stays
    second, second_ids, second_texts = shown_item(widget)
    assert second != first
    rows.nth(0).locator("select").select_option("4")
    rows.nth(1).locator("select").select_option("3")
    submit.click()
    missing = f"replies {second_ids[2]}, {second_ids[3]} have none"
    expect(status).to_have_text(f"Not saved: give every reply a rank: {missing}")
    expect(status.locator("span")).to_have_css("color", "rgb(192, 57, 43)")
    expect(widget).to_contain_text("you: 1 of 12 ranked (item 2 of 12)")
    assert 1 == len(store.read_text().splitlines())

    # 3. completed in reverse order and submitted
    rows.nth(2).locator("select").select_option("2")
    rows.nth(3).locator("select").select_option("1")
    submit.click()
    expect(status).to_have_text(f"Saved item {second}.")
    expect(widget).to_contain_text("you: 2 of 12 ranked (item 3 of 12)")

    records = [json.loads(line) for line in store.read_text().splitlines()]
    assert [
        {
            "item_id": first,
            "labeler": "you",
            "criterion": "helpfulness",
            "completion_ids": first_ids,
            "completions": first_texts,
            "ranking": [[first_ids[0]], [first_ids[1], first_ids[2]], [first_ids[3]]],
            "flags": {first_ids[3]: ["unsafe"]},
        },
        {
            "item_id": second,
            "labeler": "you",
            "criterion": "helpfulness",
            "completion_ids": second_ids,
            "completions": second_texts,
            "ranking": [[cid] for cid in reversed(second_ids)],
            "flags": {},
        },
    ] == [
        {
            key: record[key]
            for key in ("item_id", "labeler", "criterion", "completion_ids", "completions", "ranking", "flags")
        }
        for record in records
    ]


def test_chapter_04s_live_plot_redraws_while_ppo_trains(lab, page):
    """Chapter 04 run in the browser on a prepared workdir (a reward model in 03/, as chapter 03 leaves it,
    trained on a few shipped pairs so as to cost seconds, not minutes): the live dashboard of section 2 shows
    a figure at step 10 and a new one at step 20 while the cell is still running."""
    few_pairs = pairs.build_pairs(shipped.load_rankings()[:8], seed=0)
    reward_model.load_or_train(presets.load("tiny"), save_to=lab.workdir / "03" / "reward_model", pairs=few_pairs)
    open_and_run_all(page, lab, "04_ppo.ipynb")
    expect(code_cell(page, "reward_model.load_or_train")).to_contain_text(
        f"the preference model was loaded from {lab.workdir / '03' / 'reward_model'}", timeout=WAIT_MS
    )
    live_cell = code_cell(page, "ppo_plots.LivePlot(")
    running = live_cell.locator(".jp-InputPrompt")
    plot = live_cell.locator(".widget-output img")  # the LivePlot's ipywidgets Output, redrawn every 10 steps

    expect(plot).to_have_count(1, timeout=WAIT_MS)
    first = plot.get_attribute("src")
    expect(live_cell).to_contain_text(re.compile(r"step 10/\d+ "))
    expect(running).to_have_text("[*]:")
    expect(plot).not_to_have_attribute("src", first, timeout=WAIT_MS)
    expect(live_cell).to_contain_text(re.compile(r"step 20/\d+ "))
    expect(running).to_have_text("[*]:")

    # Stop the remaining steps as a learner would, with the toolbar's interrupt button.
    page.get_by_role("button", name="Interrupt the kernel").click()
    expect(live_cell).to_contain_text("KeyboardInterrupt", timeout=WAIT_MS)
