"""The course as a learner sees it: JupyterLab in headless Chromium, the learner's first steps, the widgets.

nbval runs every notebook's code in a kernel, but nothing there renders a widget, loads JupyterLab's widget
extension or shows what a person sees. Here JupyterLab (from the pinned requirements) runs on localhost (a free
port, a token, its own temporary runtime, config and settings directories) and Debian's Chromium, driven by
Playwright, opens

* a **learner** copy (``notebooks/learner/00_introduction.ipynb``): its cells are run one by one (Shift+Enter,
  as a person does) up to and including the β slider; the only errors allowed are the exercise stubs'
  ``NotImplementedError`` and the checks saying a function is still the stub; the β slider is dragged and its
  plot must change, and typed back to its first value, the first plot must come back;
* the learner copies of 02 and 03, their first cells through the first exercise's check (nbval skips the
  learner copies, so nothing else runs them);
* a **solved** notebook (``notebooks/02_sft_policy.ipynb``): its first cells, then the cells the generation panel
  needs and the panel, with no error at all; a new prompt is typed and **Generate** pressed, and the panel must
  show samples of it, and only of it;
* the solved ``notebooks/03_reward_model.ipynb`` up to its labelling widget (section 11): two pairs are labelled
  by clicking, the widget must count them and move on, and the labels file it names must hold exactly those two
  labels (under the tests the file is in a temporary directory).

Every widget must render (no "Error displaying widget", no widget shown as its text repr). The notebooks are
copies in a temporary directory, so nothing in the checkout is written.

Chromium: ``RLHF_CHROMIUM``, else ``chromium`` on the PATH, else ``/usr/bin/chromium``; Playwright only drives
it and never downloads a browser. Without Chromium (a learner's laptop) the test skips and says why; with
``RLHF_BROWSER_REQUIRED=1`` (``.ci/run`` sets it, after installing Chromium) a missing browser fails instead.
Screenshots go to ``RLHF_SCREENSHOTS`` when set, else to a temporary directory (its path is printed).

    python -m pytest tests/test_browser.py -m slow -s
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
REQUIRED_VARIABLE = "RLHF_BROWSER_REQUIRED"  # "1" in CI: no browser is a failure, not a skip
CHROMIUM_VARIABLE = "RLHF_CHROMIUM"  # a Chromium (or Chrome) binary, if not Debian's
SCREENSHOTS_VARIABLE = "RLHF_SCREENSHOTS"  # where the screenshots go (default: a temporary directory)

# Debian's Chromium as root in a container: no sandbox, no GPU, and nothing that reaches the network on its own.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]

LEARNER_00 = "notebooks/learner/00_introduction.ipynb"
SOLVED_02 = "notebooks/02_sft_policy.ipynb"
SOLVED_03 = "notebooks/03_reward_model.ipynb"
# Learner copies whose first cells, through the first exercise's check, run in seconds (nbval skips learner copies;
# the first cells of 06-08 load models and data for a minute each, and nbval runs the same code in the solved ones).
LEARNER_FIRST_CELLS = ["notebooks/learner/02_sft_policy.ipynb", "notebooks/learner/03_reward_model.ipynb"]

VIEWPORT = {"width": 1280, "height": 860}
SERVER_START_SECONDS = 120
KERNEL_START_SECONDS = 180
CELL_SECONDS = 300  # one cell, on a busy 2-core machine (02's live training under RLHF_CI=1 is the longest)
WIDGET_SECONDS = 120  # a slider's redraw, a generation

# A cell's error as JupyterLab shows it: IPython's traceback header, "<ename>   Traceback (most recent call last)".
TRACEBACK_HEADER = re.compile(r"^(?P<ename>[\w.]+)\s+Traceback \(most recent call last\)", re.MULTILINE)
# A failed exercise check as JupyterLab shows it: only its message (`ExerciseFailed._render_traceback_`), after the
# learner's own traceback when their code raised.
CHECK_FAILURE = re.compile(r"^(?P<ename>ExerciseFailed): (?P<message>.*)", re.MULTILINE | re.DOTALL)
# A widget shown as its text repr means the widget extension did not render it.
WIDGET_REPR = re.compile(r"^(interactive|VBox|HBox|Box|FloatSlider|IntSlider|Button|Text|Output)\(", re.MULTILINE)


# ----------------------------------------------------------------------------------------------
# The browser, or a clear reason why not
# ----------------------------------------------------------------------------------------------


def _unavailable(reason: str):
    """Skip on a learner's machine; fail where the browser test must run (RLHF_BROWSER_REQUIRED=1, CI)."""
    if os.environ.get(REQUIRED_VARIABLE) == "1":
        pytest.fail(f"{reason} — and {REQUIRED_VARIABLE}=1 says this run must test the browser (CI: .ci/run "
                    "installs Debian's chromium)", pytrace=False)
    pytest.skip(reason)


def _find_chromium() -> str | None:
    named = os.environ.get(CHROMIUM_VARIABLE)
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("/usr/bin/chromium")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _find_chromium()
    if path is None:
        where = os.environ.get(CHROMIUM_VARIABLE) or "`chromium` on the PATH"
        _unavailable(f"no Chromium to drive ({where} not found): the browser test needs Debian's chromium "
                     f"(`apt-get install chromium`) or {CHROMIUM_VARIABLE}=/path/to/chromium")
    if importlib.util.find_spec("playwright") is None:
        _unavailable("Playwright for Python is not installed (`pip install -r requirements.txt` installs it)")
    return path


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ[SCREENSHOTS_VARIABLE]) if os.environ.get(SCREENSHOTS_VARIABLE) else \
        tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    print(f"\nbrowser test screenshots: {folder}")


# ----------------------------------------------------------------------------------------------
# JupyterLab on localhost
# ----------------------------------------------------------------------------------------------


class Lab:
    """A JupyterLab server serving a temporary copy of the notebooks."""

    def __init__(self, root: Path, port: int, token: str, process: subprocess.Popen, log: Path):
        self.root, self.port, self.token, self.process, self.log = root, port, token, process, log
        self.base = f"http://127.0.0.1:{port}"

    def url(self, notebook: str) -> str:
        """The notebook in a workspace of its own, reset: one tab, the default layout, whatever ran before."""
        workspace = "test-" + re.sub(r"\W", "-", notebook)
        return f"{self.base}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.token}"

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.base}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self):
        """End every session (and its kernel): a notebook's models do not stay in memory for the next test."""
        for session in self.api("sessions"):
            self.api(f"sessions/{session['id']}", method="DELETE")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_settings(folder: Path):
    """User settings of this server only: no news or update pop-up over the notebook, no autosave."""
    settings = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                            "checkForUpdates": False},
        "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    }
    for name, values in settings.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(values))


@pytest.fixture(scope="module")
def lab(chromium, tmp_path_factory):
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "course"
    for notebook in (LEARNER_00, SOLVED_02, SOLVED_03, *LEARNER_FIRST_CELLS):
        (root / notebook).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / notebook, root / notebook)
    shutil.copytree(REPO / "images", root / "images")  # the notebooks' markdown shows ../images/*.png
    for name in ("runtime", "config", "data", "ipython", "settings", "workspaces"):
        (base / name).mkdir()
    _write_settings(base / "settings")

    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(base / "runtime"), JUPYTER_CONFIG_DIR=str(base / "config"),
               JUPYTER_DATA_DIR=str(base / "data"), IPYTHONDIR=str(base / "ipython"))
    # The test session's MPLBACKEND=Agg (conftest.py) would make every plt.show() draw nothing; a learner's
    # kernel has no MPLBACKEND and gets the inline backend, so the kernels here get that too. The other test
    # variables (RLHF_CI=1: short demos, HF_HUB_OFFLINE=1, TQDM_DISABLE=1) reach the kernels, as under nbval.
    env.pop("MPLBACKEND", None)
    port, token = _free_port(), secrets.token_hex(24)
    log = base / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True",  # CI runs as root
               f"--LabApp.user_settings_dir={base / 'settings'}", f"--LabApp.workspaces_dir={base / 'workspaces'}",
               "--LabApp.news_url=None"]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # its own process group: the kernels end with it
    server = Lab(root, port, token, process, log)
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited at start (status {process.returncode}):\n{server.log_tail()}")
            try:
                server.api("status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within {SERVER_START_SECONDS} s:\n{server.log_tail()}")
                time.sleep(0.25)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen):
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh --user-data-dir
            executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
            viewport=VIEWPORT, device_scale_factor=1)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser, lab):
    """A new tab; its JavaScript errors are collected (and fail the test), its kernels are shut down after it."""
    tab = browser.new_page()
    tab.page_errors = []
    tab.on("pageerror", lambda error: tab.page_errors.append(str(error)))
    yield tab
    tab.close()
    lab.shut_down_kernels()


# ----------------------------------------------------------------------------------------------
# A notebook in JupyterLab
# ----------------------------------------------------------------------------------------------


class Notebook:
    """One notebook opened in JupyterLab, driven by keyboard and mouse."""

    def __init__(self, page, lab: Lab, path: str, screenshots: Path):
        self.page, self.lab, self.path, self.screenshots = page, lab, path, screenshots
        self.cells_json = json.loads((lab.root / path).read_text())["cells"]
        self.cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")

    # -- opening and the kernel --

    def open(self):
        self.page.goto(self.lab.url(self.path))
        expected = len(self.cells_json)
        self._wait(lambda: self.cells.count() == expected, KERNEL_START_SECONDS,
                   lambda: f"{self.path}: JupyterLab shows {self.cells.count()} of its {expected} cells")
        kernel = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-KernelName").first
        kernel_name = lambda: kernel.inner_text() if kernel.count() else ""  # noqa: E731
        # The kernel has started when the toolbar names it and the execution indicator says idle.
        self._wait(lambda: "Python 3" in kernel_name() and self.kernel_status() == "idle"
                   or self.kernel_status() == "dead", KERNEL_START_SECONDS,
                   lambda: f"{self.path}: the kernel did not start (toolbar: {kernel_name()!r}, "
                           f"status {self.kernel_status()!r})")
        assert self.kernel_status() == "idle", f"{self.path}: the kernel died at start\n{self.lab.log_tail()}"
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Control+b")  # fold the file browser away: the notebook gets the width
        return self

    def index(self, marker: str, cell_type: str = "code") -> int:
        """The first cell of `cell_type` whose source contains `marker`."""
        for i, cell in enumerate(self.cells_json):
            if cell["cell_type"] == cell_type and marker in "".join(cell["source"]):
                return i
        raise AssertionError(f"{self.path} has no {cell_type} cell containing {marker!r}: update tests/test_browser.py")

    # -- running cells --

    def run(self, cells) -> list[int]:
        """Run `cells` (indices, in order) as a person does: Shift+Enter on each, which selects the next one; a
        cell that is not the one selected is clicked first. Waits for each code cell to finish; returns the
        indices of the code cells run."""
        ran = []
        for i in cells:
            if self._active() != i:
                self.cells.nth(i).locator(".jp-InputPrompt").first.click()
                self.page.keyboard.press("Escape")  # command mode
            assert self._active() == i, f"{self.path}: expected cell {i} to be selected, found cell {self._active()}"
            start = time.monotonic()
            self.page.keyboard.press("Shift+Enter")
            if self.cells_json[i]["cell_type"] == "code":
                self._wait_for_cell(i)
                ran.append(i)
                if time.monotonic() - start > 10:
                    print(f"\n{self.path}: cell {i} took {time.monotonic() - start:.0f} s")
        return ran

    def _active(self) -> int:
        return self.page.evaluate(
            "() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')]"
            ".findIndex(cell => cell.classList.contains('jp-mod-active'))")

    def _wait_for_cell(self, i: int):
        """Wait until cell i shows its execution count, "[n]:" (or the kernel dies)."""
        prompt = self.cells.nth(i).locator(".jp-InputPrompt").first
        self._wait(lambda: re.fullmatch(r"\[\d+\]:", prompt.text_content().strip()) is not None
                   or self.kernel_status() == "dead", CELL_SECONDS,
                   f"{self.path}: cell {i} did not finish within {CELL_SECONDS} s")
        assert self.kernel_status() != "dead", f"{self.path}: the kernel died running cell {i}\n{self.lab.log_tail()}"

    # -- what the page shows --

    def outputs(self, i: int) -> list[tuple[str, str]]:
        """(mime type, text) of each output of cell i, as rendered."""
        return self.cells.nth(i).evaluate(
            "cell => [...cell.querySelectorAll('.jp-OutputArea-output')]"
            ".map(o => [o.getAttribute('data-mime-type') || '', o.textContent])")

    def errors(self, cells) -> list[tuple[int, str, str]]:
        """(cell, error name, last line) of every error shown in `cells`."""
        found = []
        for i in cells:
            for mime, text in self.outputs(i):
                if mime != "application/vnd.jupyter.stderr":
                    continue
                header, failure = TRACEBACK_HEADER.search(text), CHECK_FAILURE.search(text)
                if failure:
                    found.append((i, failure["ename"], failure["message"].strip()))
                elif header:
                    last = [line for line in text.strip().splitlines() if line.strip()][-1]
                    found.append((i, header["ename"], last.strip()))
        return found

    def stderr(self, cells) -> list[tuple[int, str]]:
        """(cell, text) of every stderr stream that is not an error (warnings: shown in red, but no failure)."""
        return [(i, text.strip()) for i in cells for mime, text in self.outputs(i)
                if mime == "application/vnd.jupyter.stderr" and not TRACEBACK_HEADER.search(text)
                and not CHECK_FAILURE.search(text)]

    def cut_off_labels(self, cells) -> list[tuple[int, str]]:
        """(cell, label) of widget labels too narrow for their text (shown with an ellipsis)."""
        return [(i, label) for i in cells for label in self.cells.nth(i).evaluate(
            "cell => [...cell.querySelectorAll('.widget-label')]"
            ".filter(l => l.scrollWidth > l.clientWidth + 1).map(l => l.textContent)")]

    def widget_problems(self, cells) -> list[str]:
        problems = []
        for i in cells:
            for mime, text in self.outputs(i):
                if "Error displaying widget" in text:
                    problems.append(f"cell {i}: {text.strip()[:300]}")
                elif mime == "text/plain" and WIDGET_REPR.search(text):
                    problems.append(f"cell {i} shows a widget as text, not rendered: {text.strip()[:200]}")
        return problems

    def scroll_to(self, i: int):
        self.cells.nth(i).evaluate("cell => cell.scrollIntoView({block: 'start'})")
        self.page.wait_for_timeout(300)  # let the layout settle before a screenshot

    def screenshot(self, name: str, element=None, **options) -> Path:
        path = self.screenshots / f"{name}.png"
        (element or self.page).screenshot(path=str(path), **options)
        return path

    def kernel_status(self) -> str | None:
        indicator = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator")
        return indicator.first.get_attribute("data-status") if indicator.count() else None

    def settle(self, value, what: str, quiet_seconds: float = 1.5):
        """Wait until the kernel is idle and value() has not changed for `quiet_seconds`; return it. (A dragged
        slider redraws for values on the way; the last redraw is the one to look at.)"""
        deadline = time.monotonic() + WIDGET_SECONDS
        last, since = value(), time.monotonic()
        while True:
            self.page.wait_for_timeout(200)
            now = value()
            if now != last:
                last, since = now, time.monotonic()
            elif self.kernel_status() == "idle" and time.monotonic() - since >= quiet_seconds:
                return now
            if time.monotonic() > deadline:
                shot = self.screenshot(f"failure-{Path(self.path).stem}")
                pytest.fail(f"{what} kept changing, or the kernel stayed busy, for {WIDGET_SECONDS} s "
                            f"(screenshot: {shot})", pytrace=False)

    def wait_visible(self, locator, what: str, cell: int):
        """Wait for a widget's element; failing, say what the cell shows instead."""
        self._wait(lambda: locator.count() > 0 and locator.is_visible(), WIDGET_SECONDS,
                   lambda: f"{self.path}: {what} did not render in cell {cell}; the cell shows {self.outputs(cell)}")

    def _wait(self, condition, seconds: float, message):
        """Wait until condition() holds; else fail with `message` (a string, or a function giving one: what the
        page shows when the time is up) and a screenshot."""
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                shot = self.screenshot(f"failure-{Path(self.path).stem}")
                pytest.fail(f"{message() if callable(message) else message} (screenshot: {shot})", pytrace=False)
            self.page.wait_for_timeout(200)


# ----------------------------------------------------------------------------------------------
# The tests
# ----------------------------------------------------------------------------------------------


def _report_stderr(notebook: Notebook, cells):
    """Print what a learner sees that is odd but no failure: stderr (warnings, in red), widget labels cut off."""
    for i, text in notebook.stderr(cells):
        print(f"\n{notebook.path}, cell {i} writes to stderr: {text[:400]}")
    for i, label in notebook.cut_off_labels(cells):
        print(f"\n{notebook.path}, cell {i}: the widget label {label!r} is cut off")


def _assert_learner_cells(notebook: Notebook, ran, check_cell: int):
    """Only the stubs' errors, the stub's check says so, every widget renders."""
    errors = notebook.errors(ran)
    unexpected = [e for e in errors if not _allowed_in_learner_copy(e[1], e[2])]
    assert not unexpected, f"{notebook.path}: cells show errors other than the exercise stubs': {unexpected}"
    assert check_cell in {i for i, _, _ in errors}, (
        f"{notebook.path}: the check after the stub (cell {check_cell}) should say the function is still the stub; "
        f"errors shown: {errors}")
    assert notebook.widget_problems(ran) == []
    _report_stderr(notebook, ran)


def _allowed_in_learner_copy(ename: str, last_line: str) -> bool:
    """The learner copy's intended errors: a stub raising NotImplementedError, a check saying it is the stub."""
    return ename == "NotImplementedError" or (ename == "ExerciseFailed" and "is still the stub" in last_line)


def test_learner_notebook_00_runs_and_its_beta_slider_redraws(page, lab, screenshots):
    notebook = Notebook(page, lab, LEARNER_00, screenshots).open()
    slider_cell = notebook.index("widgets.interact(")
    check_cell = notebook.index("exercises.check_")
    exercise_heading = notebook.index("### Exercise", cell_type="markdown")
    ran = notebook.run(range(slider_cell + 1))

    _assert_learner_cells(notebook, ran, check_cell)

    # What a learner sees first: the exercise, the stub, and the check's message under it (a taller window).
    page.set_viewport_size({"width": 1280, "height": 1180})
    notebook.scroll_to(exercise_heading)
    bottom = notebook.cells.nth(check_cell + 1).bounding_box()
    notebook.screenshot("learner_exercise",
                        clip={"x": 0, "y": 0, "width": 1280, "height": min(bottom["y"] + bottom["height"] + 8, 1180)})
    page.set_viewport_size(VIEWPORT)

    cell = notebook.cells.nth(slider_cell)
    notebook.scroll_to(slider_cell)
    slider = cell.locator(".widget-slider").first
    notebook.wait_visible(slider, "the beta slider", slider_cell)
    plot = cell.locator(".widget-output img").first
    notebook.wait_visible(plot, "the beta slider's plot", slider_cell)
    before = plot.get_attribute("src")
    readout = cell.locator(".widget-readout").first
    value_before = readout.text_content()

    image = lambda: plot.get_attribute("src") if plot.count() else None  # noqa: E731  (a data: URL, the PNG)

    # Drag the handle to the left (a smaller beta): the value changes, and the plot is redrawn for it.
    handle = slider.locator(".noUi-handle").first
    handle.scroll_into_view_if_needed()
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 60, y, steps=4)
    page.mouse.up()
    notebook._wait(lambda: readout.text_content() != value_before, WIDGET_SECONDS,
                   f"{LEARNER_00}: dragging the beta slider did not change its value ({value_before})")
    moved = notebook.settle(image, f"{LEARNER_00}: the beta slider's plot")
    assert moved not in (None, before), (f"{LEARNER_00}: the beta slider moved ({value_before} -> "
                                         f"{readout.text_content()}) but its plot did not change")
    assert notebook.errors([slider_cell]) == [] and notebook.widget_problems([slider_cell]) == []
    notebook.screenshot("beta_slider", element=cell.locator(".widget-interact").first)

    # Type the first value back into the readout: the plot is the first one again, so what is drawn follows
    # the slider's last value (not a stale redraw from the middle of the drag).
    readout.click()
    page.keyboard.press("Control+a")
    page.keyboard.type(value_before)
    page.keyboard.press("Enter")
    notebook._wait(lambda: readout.text_content() == value_before, WIDGET_SECONDS,
                   lambda: f"{LEARNER_00}: typing {value_before} into the slider's readout left it at "
                           f"{readout.text_content()}")
    assert notebook.settle(image, f"{LEARNER_00}: the beta slider's plot") == before, (
        f"{LEARNER_00}: back at log10 beta = {value_before}, the plot differs from the first one drawn for it")
    assert page.page_errors == [], f"JavaScript errors in the page: {page.page_errors}"


@pytest.mark.parametrize("path", LEARNER_FIRST_CELLS, ids=lambda path: Path(path).stem)
def test_learner_notebook_first_cells(page, lab, screenshots, path):
    notebook = Notebook(page, lab, path, screenshots).open()
    check_cell = notebook.index("exercises.check_")
    ran = notebook.run(range(check_cell + 1))
    _assert_learner_cells(notebook, ran, check_cell)
    assert page.page_errors == [], f"JavaScript errors in the page: {page.page_errors}"


def test_solved_notebook_02_generation_panel_writes_on_generate(page, lab, screenshots):
    notebook = Notebook(page, lab, SOLVED_02, screenshots).open()
    first_check = notebook.index("exercises.check_")
    panel_cell = notebook.index("button.on_click(")
    # The first cells (imports, exercise 2.1 and its check), then what the panel needs: the shipped policy and
    # `show_samples` (which loads the reward model). The live training and the perplexity and sampling-table
    # cells in between take minutes on a CPU and the panel uses nothing from them; nbval runs them all.
    needed = [notebook.index("load_policy("), notebook.index("def show_samples"), panel_cell]
    ran = notebook.run([*range(first_check + 1), *needed])

    assert notebook.errors(ran) == [], f"{SOLVED_02}: a solved notebook shows errors"
    assert notebook.widget_problems(ran) == []

    cell = notebook.cells.nth(panel_cell)
    prompt_box = cell.locator(".widget-text input").first
    notebook.wait_visible(prompt_box, "the generation panel's prompt box", panel_cell)
    output = cell.locator(".widget-output").first
    prompt = "My favourite film of the year"
    prompt_box.fill(prompt)
    cell.locator("button", has_text="Generate").click()

    def samples():
        return [line for line in output.text_content().splitlines() if f"| {prompt}|" in line]

    notebook._wait(lambda: len(samples()) >= 1, WIDGET_SECONDS,
                   lambda: f"{SOLVED_02}: after Generate the panel shows no sample for the new prompt:\n"
                           f"{output.text_content()}")
    notebook.settle(output.text_content, f"{SOLVED_02}: the generation panel's output")
    lines = [line for line in output.text_content().splitlines() if line.startswith("reward ")]
    assert lines == samples() and all(line.split(f"| {prompt}|", 1)[1].strip() for line in lines), (
        f"{SOLVED_02}: after Generate the panel should show only samples of the new prompt, each with text:\n"
        f"{output.text_content()}")
    assert notebook.errors([panel_cell]) == [] and notebook.widget_problems([panel_cell]) == []
    _report_stderr(notebook, ran)
    notebook.screenshot("generation_panel", element=cell.locator(".widget-vbox").first)
    assert page.page_errors == [], f"JavaScript errors in the page: {page.page_errors}"


def test_solved_notebook_03_labelling_widget_saves_each_click(page, lab, screenshots):
    notebook = Notebook(page, lab, SOLVED_03, screenshots).open()
    widget_cell = notebook.index("session.widget()")
    # Everything before the widget (under RLHF_CI=1 the trainings are short): it draws its pairs with the SFT
    # policy the earlier cells load, and writes its labels file in a temporary directory.
    ran = notebook.run(range(widget_cell + 1))
    assert notebook.errors(ran) == [], f"{SOLVED_03}: a solved notebook shows errors"
    assert notebook.widget_problems(ran) == []

    cell = notebook.cells.nth(widget_cell)
    notebook.scroll_to(widget_cell)
    progress = cell.locator(".widget-html").first
    notebook.wait_visible(progress, "the labelling widget", widget_cell)
    count = lambda: re.search(r"(\d+) of (\d+) labelled", progress.text_content())  # noqa: E731
    assert count() and count()[1] == "0", f"{SOLVED_03}: a fresh labels file should start at 0 labelled: " \
                                           f"{progress.text_content()!r}"
    total = int(count()[2])

    def pair_text():
        return cell.locator(".widget-html").nth(1).text_content()

    first_pair = pair_text()
    for clicks, button in enumerate(["A is more positive", "can't tell"], start=1):
        cell.locator("button", has_text=button).click()
        notebook._wait(lambda: count() and count()[1] == str(clicks), WIDGET_SECONDS,
                       lambda: f"{SOLVED_03}: after {clicks} click(s) the widget says {progress.text_content()!r}")
    assert pair_text() != first_pair, f"{SOLVED_03}: after a label the widget should show the next pair"

    # The file the widget names holds the two labels, in order, and nothing else.
    path = Path(re.search(r"saved to (\S+labels\.json)", progress.text_content())[1])
    saved = json.loads(path.read_text())
    assert saved["labels"][:2] == ["A", "tie"] and saved["labels"][2:] == [None] * (total - 2), (
        f"{SOLVED_03}: the labels file should hold the two clicks (A, can't tell) and nothing else: {saved['labels']}")
    assert notebook.errors([widget_cell]) == [] and notebook.widget_problems([widget_cell]) == []
    _report_stderr(notebook, ran)
    notebook.screenshot("labelling_widget", element=cell.locator(".widget-vbox").first)
    assert page.page_errors == [], f"JavaScript errors in the page: {page.page_errors}"
