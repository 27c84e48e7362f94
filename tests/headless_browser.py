"""Open a local HTML file in headless Chromium (Debian's ``chromium``) and report what a reader
would see: the page's text, every ``<img>`` with its ``naturalWidth``, console errors and
uncaught exceptions, and optionally a full-page screenshot.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: commands
as NUL-terminated JSON on fd 3, replies and events on fd 4), so no WebSocket client or browser
download is needed. Used by ``tests/test_report.py``; also a CLI for looking at a report::

    python -m tests.headless_browser build/sample/report.html --screenshot /tmp/report.png
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """Path of a Chromium binary on PATH (``$CHROMIUM`` first), or None."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env
    for name in CHROMIUM_CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


class _Pipe:
    """DevTools protocol client over Chromium's debugging pipe."""

    def __init__(self, proc, wfd: int, rfd: int):
        self.proc, self.wfd, self.rfd = proc, wfd, rfd
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def pump(self, seconds: float) -> None:
        """Collect events for ``seconds``."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                self.events.append(self._read(deadline))
            except TimeoutError:
                return

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no answer from chromium")
            r, _, _ = select.select([self.rfd], [], [], left)
            if not r:
                continue
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (rc {self.proc.poll()})")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)


_PAGE_STATE_JS = """(() => {
  const imgs = Array.from(document.images).map(i => ({src: i.src.slice(0, 60), complete: i.complete,
      naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight, alt: i.alt}));
  return JSON.stringify({title: document.title, text: document.body ? document.body.innerText : "",
      images: imgs, height: document.documentElement.scrollHeight,
      headings: Array.from(document.querySelectorAll('h1,h2')).map(h => h.innerText)});
})()"""


def render(html_path: str, screenshot: str | None = None, width: int = 1280,
           settle_s: float = 1.0, timeout: float = 60.0) -> dict:
    """Load ``html_path`` (a local file) in headless Chromium and inspect it.

    Args:
        html_path: local HTML file.
        screenshot: PNG path for a full-page screenshot, or None.
        width: viewport width in CSS pixels.
        settle_s: seconds to keep collecting console events after the load event.
        timeout: seconds allowed for the load.

    Returns:
        dict with ``title``, ``text`` (``innerText`` of the body), ``headings`` (h1/h2 texts),
        ``height`` (page height, px), ``images`` (list of {src, complete, naturalWidth,
        naturalHeight, alt}), ``console_errors`` (console.error/assert messages, uncaught
        exceptions and error-level log entries such as failed resource loads).

    Raises:
        FileNotFoundError: no Chromium on PATH.
        RuntimeError / TimeoutError: Chromium died or did not answer.
    """
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium on PATH: apt-get install chromium (scripts/system_deps.sh)")
    url = "file://" + os.path.abspath(html_path)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        to_r, to_w = os.pipe()      # our commands -> chromium fd 3
        from_r, from_w = os.pipe()  # chromium fd 4 -> our reader

        def _fds():  # in the child: our pipe ends as fd 3 / fd 4 (dup2 clears close-on-exec)
            a, b = os.dup(to_r), os.dup(from_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, close_fds=False, preexec_fn=_fds)
        os.close(to_r)
        os.close(from_w)
        cdp = _Pipe(proc, to_w, from_r)
        try:
            target = cdp.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            sid = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for dom in ("Page", "Runtime", "Log"):
                cdp.send(f"{dom}.enable", session=sid)
            cdp.send("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=sid)
            cdp.send("Page.navigate", {"url": url}, session=sid)
            deadline = time.time() + timeout
            while not any(e.get("method") == "Page.loadEventFired" for e in cdp.events):
                cdp.pump(min(0.5, max(deadline - time.time(), 0.01)))
                if time.time() > deadline:
                    raise TimeoutError(f"{url} did not load in {timeout}s")
            cdp.pump(settle_s)
            res = cdp.send("Runtime.evaluate", {"expression": _PAGE_STATE_JS, "returnByValue": True},
                           session=sid)
            state = json.loads(res["result"]["value"])
            if screenshot:
                shot = cdp.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                                session=sid, timeout=timeout)
                with open(screenshot, "wb") as f:
                    f.write(base64.b64decode(shot["data"]))
            errors = []
            for e in cdp.events:
                m, p = e.get("method"), e.get("params", {})
                if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                    errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
                elif m == "Runtime.exceptionThrown":
                    d = p.get("exceptionDetails", {})
                    errors.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
                elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                    errors.append(f"{p['entry'].get('source')}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            state["console_errors"] = errors
            try:
                cdp.send("Browser.close", timeout=5)
            except Exception:
                pass
            return state
        finally:
            os.close(to_w)
            os.close(from_r)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Render an HTML file in headless Chromium: images, console errors, screenshot.")
    ap.add_argument("html", help="local HTML file")
    ap.add_argument("--screenshot", help="write a full-page PNG screenshot here")
    ap.add_argument("--width", type=int, default=1280, help="viewport width (default %(default)s)")
    a = ap.parse_args(argv)
    st = render(a.html, screenshot=a.screenshot, width=a.width)
    print(json.dumps({k: v for k, v in st.items() if k != "text"}, indent=1))
    return 1 if st["console_errors"] or any(i["naturalWidth"] == 0 for i in st["images"]) else 0


if __name__ == "__main__":
    raise SystemExit(_main())
