"""A real headless Chromium for the tests, driven by selenium; it dies with the harness.

Contract. :class:`Browser` (a context manager) starts Debian's `chromedriver` (`make
browser` installs it with `chromium`) as a harness child (:func:`harness.procs.spawn`: own
session, tagged, SIGKILLed if the harness dies), waits until its `/status` says ready,
and opens one selenium session against it (`webdriver.Remote` with the driver's own
address): selenium never looks for, or downloads, a browser or a driver (SE_OFFLINE is
set as well). Chromium runs headless, without sandbox, GPU, first-run page, background
networking, component updates or sync, with a fresh profile in a temporary directory.
On exit the session is closed, then every process left in the driver's session (the
browser's own) is killed and the profile removed. `screenshot` writes a PNG of the whole
page, or of one element (the window is stretched to the document's height for the
shot). `browser_problem` says why no browser can run here (None when one can).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from selenium import webdriver
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from harness.procs import ProcessError, alive, all_pids, spawn, tail, terminate

CHROMIUM = "/usr/bin/chromium"  # Debian's packages chromium, chromium-driver
CHROMEDRIVER = "/usr/bin/chromedriver"
# Chromium's flags for a test run: no sandbox (root in a container), nothing started
# or fetched in the background, a profile of its own.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-default-browser-check", "--disable-extensions")
# A cold chromedriver answers /status in well under a second; a loaded 2-core box needs more.
START_TIMEOUT_S = 20.0
POLL_S = 0.1
# Longest full-page screenshot (pixels): a runaway page must not make a huge image.
MAX_SHOT_HEIGHT = 6000


class BrowserError(RuntimeError):
    """The browser or its driver could not be started as the harness needs."""


def browser_problem() -> str | None:
    """Why the browser cannot run here (None: it can)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        return f"{' and '.join(missing)} missing; run `make browser` (Debian's chromium, " \
               "chromium-driver)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _session_members(leader: int) -> list[int]:
    found = []
    for pid in all_pids():
        with contextlib.suppress(OSError):
            if os.getsid(pid) == leader and alive(pid):
                found.append(pid)
    return found


class Browser:
    """Headless Chromium through chromedriver; `driver` is the selenium session."""

    def __init__(self, *, log_path: Path, width: int = 1280, height: int = 1000,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.log_path = log_path
        self.width = width
        self.height = height
        self.start_timeout_s = start_timeout_s
        self._driver: WebDriver | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._profile: str | None = None

    @property
    def driver(self) -> WebDriver:
        if self._driver is None:
            raise BrowserError("the browser is not started")
        return self._driver

    def start(self) -> None:
        problem = browser_problem()
        if problem is not None:
            raise BrowserError(problem)
        port = _free_port()
        self._profile = tempfile.mkdtemp(prefix="ab-chromium-")
        self._log = self.log_path.open("ab")
        env = {**os.environ, "SE_OFFLINE": "true"}
        self._proc = spawn([CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"],
                           env=env, stdout=self._log, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            self._wait_ready(base)
            options = webdriver.ChromeOptions()
            options.binary_location = CHROMIUM
            for flag in (*FLAGS, f"--user-data-dir={self._profile}",
                         f"--window-size={self.width},{self.height}"):
                options.add_argument(flag)
            self._driver = webdriver.Remote(command_executor=base, options=options)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, base: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise BrowserError(f"chromedriver exited ({self._proc.returncode}): "
                                   f"{tail(self.log_path)}")
            try:
                with urllib.request.urlopen(f"{base}/status", timeout=2.0) as answer:
                    if json.load(answer).get("value", {}).get("ready"):
                        return
            except (OSError, ValueError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise BrowserError(f"chromedriver not ready within {self.start_timeout_s} s: "
                                   f"{tail(self.log_path)}")
            time.sleep(POLL_S)

    def stop(self) -> None:
        """Close the session, kill what is left of the driver's session, drop the profile."""
        if self._driver is not None:
            with contextlib.suppress(Exception):  # a dead browser: the kill below ends it
                self._driver.quit()
            self._driver = None
        if self._proc is not None:
            proc, self._proc = self._proc, None
            left = _session_members(proc.pid)
            with contextlib.suppress(ProcessError):
                terminate(left, grace_s=2.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    def screenshot(self, path: Path, *, full_page: bool = True,
                   element: WebElement | None = None) -> Path:
        """A PNG at `path` of the page (all of it with `full_page`), or of one `element`
        (the window stretched as for a full page, so all of it is in view)."""
        driver = self.driver
        size = driver.get_window_size()
        stretch = full_page or element is not None
        if stretch:
            # The window's outer height includes some browser chrome even headless.
            height, chrome = driver.execute_script(
                "return [Math.ceil(document.documentElement.scrollHeight),"
                " window.outerHeight - window.innerHeight]")
            driver.set_window_size(size["width"],
                                   min(max(int(height), 200) + int(chrome), MAX_SHOT_HEIGHT))
            driver.execute_script("window.scrollTo(0, 0)")
        try:
            shot = element.screenshot if element is not None else driver.save_screenshot
            if not shot(str(path)):
                raise BrowserError(f"no screenshot written to {path}")
        finally:
            if stretch:
                driver.set_window_size(size["width"], size["height"])
        return path

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _smoke(url: str, out: Path) -> None:  # pragma: no cover - a manual check
    with Browser(log_path=out.with_suffix(".log")) as browser:
        browser.driver.get(url)
        browser.screenshot(out)


if __name__ == "__main__":  # pragma: no cover
    import sys

    _smoke(sys.argv[1], Path(sys.argv[2]))
