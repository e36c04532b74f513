"""A tiny W3C WebDriver client (standard library only) for the leaderboard page test.

Selenium is not used on purpose: it needs urllib3>=2, which conflicts with the
requests pin that torchattacks brings in through the [compare] extra. The page
test only needs a handful of endpoints, so they are spoken here directly.

    with Browser.start(tmp_path) as browser:
        browser.get(Path("page.html").resolve().as_uri())
        browser.click(browser.find("th[data-col=robust_acc]"))
        browser.screenshot(tmp_path / "page.png")
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"  # the W3C spec's fixed element reference key
INSTALL_HINT = (
    "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver"
)


class WebDriverError(RuntimeError):
    """The driver answered a command with an error (its name and message are kept)."""


def find_chromium() -> tuple[str, str] | None:
    """Paths of (chromium, chromedriver) if both are installed, else None."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        return None
    return chromium, driver


class ElementRef(str):
    """Marks a string as an element id when passed to :meth:`Browser.execute`."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Browser:
    """One headless Chromium session driven through chromedriver; a context manager that cleans up."""

    def __init__(self, chromium: str, chromedriver: str, workdir: Path, window: tuple[int, int] = (1400, 1000)):
        self.chromium, self.chromedriver = chromium, chromedriver
        self.workdir = Path(workdir)
        self.window = window
        self.port = 0
        self.session = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = None

    @classmethod
    def start(cls, workdir: Path, window: tuple[int, int] = (1400, 1000)) -> Browser:
        found = find_chromium()
        if found is None:
            raise FileNotFoundError(f"chromium/chromedriver not on PATH; install them with: {INSTALL_HINT}")
        return cls(*found, workdir, window)

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> Browser:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self._log = open(self.workdir / "chromedriver.log", "wb")
        self._proc = subprocess.Popen(
            [self.chromedriver, f"--port={self.port}"], stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready(timeout=30)
            width, height = self.window
            options = {
                "binary": self.chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    f"--user-data-dir={self.workdir / 'profile'}",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-dev-shm-usage", f"--window-size={width},{height}",
                ],
            }
            caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
            value = self._request("POST", "/session", caps, timeout=120)
            self.session = value["sessionId"]
        except BaseException:
            self._stop_driver()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.session:
                self._request("DELETE", f"/session/{self.session}", timeout=30)
        except (OSError, WebDriverError):
            pass  # the driver is killed below either way
        finally:
            self.session = ""
            self._stop_driver()

    def _stop_driver(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                log = self.workdir / "chromedriver.log"
                raise WebDriverError(f"chromedriver exited with {self._proc.returncode}; see {log}")
            try:
                if self._request("GET", "/status", timeout=2).get("ready"):
                    return
            except (OSError, WebDriverError):
                pass
            time.sleep(0.1)
        raise WebDriverError(f"chromedriver did not become ready on port {self.port} within {timeout}s")

    # -- transport ---------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict | None = None, timeout: float = 60) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:  # W3C errors come back as JSON with a 4xx/5xx status
            try:
                value = json.loads(err.read()).get("value", {})
            except ValueError:
                value = {}
            error, message = value.get("error", err.code), value.get("message", "")
            raise WebDriverError(f"{method} {path}: {error}: {message}") from None
        return payload.get("value")

    def _cmd(self, method: str, path: str, body: dict | None = None) -> Any:
        return self._request(method, f"/session/{self.session}{path}", body)

    # -- commands ----------------------------------------------------------------------------------
    def get(self, url: str) -> None:
        self._cmd("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        """The element id of the first match (WebDriverError 'no such element' otherwise)."""
        return self._cmd("POST", "/element", {"using": "css selector", "value": css})[ELEMENT_KEY]

    def find_all(self, css: str) -> list[str]:
        found = self._cmd("POST", "/elements", {"using": "css selector", "value": css})
        return [e[ELEMENT_KEY] for e in found]

    def click(self, element: str) -> None:
        self._cmd("POST", f"/element/{element}/click", {})

    def text(self, element: str) -> str:
        return self._cmd("GET", f"/element/{element}/text")

    def attribute(self, element: str, name: str) -> str | None:
        return self._cmd("GET", f"/element/{element}/attribute/{name}")

    def displayed(self, element: str) -> bool:
        return bool(self._cmd("GET", f"/element/{element}/displayed"))

    def execute(self, script: str, *args: Any) -> Any:
        """Run ``script`` as a function body in the page (``arguments[i]`` are ``args``); return its value."""
        wrapped = [{ELEMENT_KEY: a} if isinstance(a, ElementRef) else a for a in args]
        return self._cmd("POST", "/execute/sync", {"script": script, "args": wrapped})

    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """Save the viewport as a PNG file."""
        path = Path(path)
        path.write_bytes(base64.b64decode(self._cmd("GET", "/screenshot")))
        return path
