"""How fast the chat page loads from a local server, and how big its files are.

    python benchmarks/ui_load.py [--rounds 10]

Starts the real app (create_app under uvicorn, fake models from tests/fakes.py so that no
model load is timed) and opens ``/`` in headless Chromium (the system's, as the tests use it),
in a fresh browser context each round (empty cache), then once more with a reload (the 304s).
Reports the median milliseconds to DOMContentLoaded, to the load event, and to "ready" (the
model list from /v1/models shown), and the page's bytes, raw and gzipped as served.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

TIMING = """() => {
  const [nav] = performance.getEntriesByType("navigation");
  return {dom: nav.domContentLoadedEventEnd, load: nav.loadEventEnd};
}"""


def measure(page: object, url: str, reload: bool = False) -> dict[str, float]:
    started = time.perf_counter()
    if reload:
        page.reload()
    else:
        page.goto(url)
    page.wait_for_selector("#chat-model option", state="attached")
    ready = (time.perf_counter() - started) * 1000
    page.wait_for_load_state("load")
    timing = page.evaluate(TIMING)
    return {"dom_ms": timing["dom"], "load_ms": timing["load"], "ready_ms": ready}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    from browserkit import launch
    from fakes import FakeChatModel, FakeEmbeddingModel
    from playwright.sync_api import sync_playwright
    from serverkit import AppServer

    from onnxg.server.routes import ui

    assets = ui.load()
    sizes = {"raw_bytes": sum(len(a.body) for a in assets.values()),
             "gzip_bytes": sum(len(a.gzipped) for a in assets.values()), "files": len(assets)}
    cold, warm = [], []
    with AppServer([FakeChatModel(), FakeEmbeddingModel()]) as server, sync_playwright() as playwright:
        browser = launch(playwright)
        measure(browser.new_page(), server.url + "/")  # start-up of the browser itself, not timed
        for _ in range(args.rounds):
            context = browser.new_context()
            page = context.new_page()
            cold.append(measure(page, server.url + "/"))
            warm.append(measure(page, server.url + "/", reload=True))
            context.close()
        browser.close()

    def median(rows: list[dict[str, float]]) -> dict[str, float]:
        return {key: round(statistics.median(r[key] for r in rows), 1) for key in rows[0]}

    print(json.dumps({"rounds": args.rounds, **sizes, "cold": median(cold), "reload": median(warm)}, indent=2))


if __name__ == "__main__":
    main()
