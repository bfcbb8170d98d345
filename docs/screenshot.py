"""
Screenshot of the running web page, for docs/app.png:

    streamlit run app.py --server.headless true --server.port 8765 -- --runs runs/quick &
    python docs/screenshot.py "http://127.0.0.1:8765/?text=I%20hate%20you!&compare=1" docs/app.png "All models"

`chromium --headless --screenshot` alone shoots too early: a Streamlit page draws itself only once its
websocket has delivered the elements, which --virtual-time-budget does not wait for. So this drives
headless Chromium over the DevTools protocol and shoots once the page shows the text given.
Needs chromium (apt-get install chromium fonts-noto-color-emoji) and the websockets package.
"""

import asyncio
import base64
import json
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets

PORT = 9333


def page_socket():
    """The DevTools websocket address of the browser's tab, once the browser is up."""
    for _ in range(100):
        try:
            tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/json/list"))
            return next(t["webSocketDebuggerUrl"] for t in tabs if t["type"] == "page")
        except (OSError, StopIteration):
            time.sleep(0.2)
    raise SystemExit("error: headless chromium did not start")


async def shoot(url, out, wait_for, width, height):
    async with websockets.connect(page_socket(), max_size=2**26) as ws:
        calls = 0

        async def call(method, **params):
            nonlocal calls
            calls += 1
            await ws.send(json.dumps({"id": calls, "method": method, "params": params}))
            while True:  # skip the browser's events until the answer to this call
                message = json.loads(await ws.recv())
                if message.get("id") == calls:
                    return message.get("result", {})

        await call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        await call("Page.navigate", url=url)
        for _ in range(240):
            text = await call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''", returnByValue=True)
            if wait_for in text["result"].get("value", ""):
                break
            await asyncio.sleep(0.5)
        else:
            raise SystemExit(f"error: the page never showed {wait_for!r}")
        await asyncio.sleep(2)  # let tables, fonts and animations settle
        shot = await call("Page.captureScreenshot", format="png")
        with open(out, "wb") as f:
            f.write(base64.b64decode(shot["data"]))


def main(url, out, wait_for, width=1280, height=1400):
    browser = subprocess.Popen(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         f"--user-data-dir={tempfile.mkdtemp()}", f"--remote-debugging-port={PORT}", f"--window-size={width},{height}",
         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        asyncio.run(shoot(url, out, wait_for, int(width), int(height)))
    finally:
        browser.terminate()
        browser.wait()


if __name__ == "__main__":
    main(*sys.argv[1:])
