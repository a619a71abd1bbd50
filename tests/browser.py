"""The system's headless Chromium, driven by Playwright (never `playwright install`), watching every request.

Every request the page makes passes through one route handler: those to 127.0.0.1 (and file:, data:,
about:) go on, any other is aborted and recorded, so a test can assert that nothing left the machine.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LOCAL_SCHEMES = {"file", "data", "about", "blob"}


@dataclass
class Visit:
    """What a page did: each request's URL, the ones refused (not local), and its errors."""

    requests: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in LOCAL_SCHEMES or parts.hostname == "127.0.0.1"


@contextlib.asynccontextmanager
async def browse(width: int = 1200, height: int = 900) -> AsyncIterator[tuple[object, Visit]]:
    """A fresh page in headless Chromium, and the record of what it requested."""
    from playwright.async_api import async_playwright

    visit = Visit()

    async def guard(route) -> None:
        url = route.request.url
        visit.requests.append(url)
        if is_local(url):
            await route.continue_()
        else:
            visit.refused.append(url)
            await route.abort()

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            context = await browser.new_context(viewport={"width": width, "height": height})
            await context.route("**/*", guard)
            page = await context.new_page()
            page.on("pageerror", lambda e: visit.errors.append(f"pageerror: {e}"))
            page.on("console", lambda m: m.type == "error" and visit.errors.append(f"console: {m.text}"))
            yield page, visit
        finally:
            await browser.close()


async def wait_for_charts(page, timeout_ms: float = 30_000) -> list[dict]:
    """Every chart container's name, render state and count of drawn marks, once none is still drawing."""
    await page.wait_for_function(
        "() => [...document.querySelectorAll('.chart')].every(el => el.dataset.rendered)", timeout=timeout_ms
    )
    return await page.eval_on_selector_all(
        ".chart",
        """els => els.map(el => ({
            name: el.dataset.chart,
            rendered: el.dataset.rendered,
            marks: el.querySelectorAll('svg g.mark-rect path, svg g.mark-line path, svg g.mark-symbol path,'
                + ' svg g.mark-area path, svg g.mark-rule line, svg g.mark-text text').length,
        }))""",
    )


async def figures(page) -> dict[str, str]:
    """The page's figures: ``data-figure`` -> ``data-value`` (the query's own number)."""
    return await page.eval_on_selector_all(
        "[data-figure]", "els => Object.fromEntries(els.map(el => [el.dataset.figure, el.dataset.value]))"
    )
