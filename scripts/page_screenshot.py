"""Checks xner serve's page in a real headless browser: starts Chromium (Debian's package) with
its DevTools port on loopback, opens the page of a running `xner serve`, types a sentence into
the text box, presses the button, waits for the highlighted entities, checks that each one is
drawn with its type and score, and saves a screenshot.

  python scripts/page_screenshot.py http://127.0.0.1:8080 docs/serve-page.png ["text to type"]

Needs `websocket-client` and `chromium`.
"""
import base64, json, subprocess, sys, tempfile, time, urllib.request

import websocket

url, out = sys.argv[1], sys.argv[2]
text = sys.argv[3] if len(sys.argv) > 3 else (
    "Angela Merkel traf Emmanuel Macron am Montag in Paris. Danach flog sie mit der Lufthansa nach Berlin, "
    "wo Siemens und die Deutsche Bahn auf sie warteten.")
port = 9333
profile = tempfile.mkdtemp()
browser = subprocess.Popen(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={port}",
                            "--remote-debugging-address=127.0.0.1", f"--remote-allow-origins=http://127.0.0.1:{port}", f"--user-data-dir={profile}", "--window-size=1100,820",
                            "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
            page = next(p for p in pages if p["type"] == "page")
            break
        except Exception:
            time.sleep(0.1)
    ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
    counter = [0]

    def call(method, **params):
        counter[0] += 1
        ws.send(json.dumps({"id": counter[0], "method": method, "params": params}))
        while True:
            msg = json.loads(ws.recv())
            if msg.get("id") == counter[0]:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(expr):
        return call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)["result"].get("value")

    call("Page.enable")
    call("Emulation.setDeviceMetricsOverride", width=1100, height=820, deviceScaleFactor=1, mobile=False)
    call("Page.navigate", url=url)
    for _ in range(100):
        if evaluate("document.readyState") == "complete" and "labels" in (evaluate("document.getElementById('model').textContent") or ""):
            break
        time.sleep(0.1)
    evaluate("const t = document.getElementById('text'); t.value = ''; t.focus(); true")
    call("Input.insertText", text=text)  # typed, as a user's keyboard would
    evaluate("document.getElementById('go').click(); true")
    for _ in range(200):
        status = evaluate("document.getElementById('status').textContent") or ""
        if "entities in" in status:
            break
        time.sleep(0.05)
    else:
        raise SystemExit(f"no result on the page: status {status!r}")
    marks = evaluate("Array.from(document.querySelectorAll('#result mark')).map(m => [m.firstChild.textContent, m.querySelector('.tag').textContent, m.title])")
    legend = evaluate("Array.from(document.querySelectorAll('#legend span')).map(s => s.textContent)")
    assert marks, "no entity highlighted"
    assert all("score" in title for _, _, title in marks), marks
    png = call("Page.captureScreenshot", format="png")["data"]
    open(out, "wb").write(base64.b64decode(png))
    print(json.dumps({"status": status, "entities": marks, "legend": legend, "screenshot": out}, ensure_ascii=False))
finally:
    browser.terminate()
    browser.wait()
