"""A report page as a reader's browser shows it: Debian's Chromium, headless, driven through
ChromeDriver by selenium. `make test` installs both (apt packages chromium and chromium-driver);
elsewhere the browser tests skip, unless SIREN_BENCH_REQUIRE_BROWSER=1 (set by `make test`), where
a missing browser fails them instead of passing them unseen."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# The flags a sandboxed machine with a closed network needs (no sandbox as root, no GPU, no
# background connections that the network would refuse).
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--allow-file-access-from-files")

# Every image and its load state; every link's href as written and as the browser resolved it;
# every element id (for in-page anchors); each figure's caption (the text right after it).
PAGE_FACTS = """
const images = [...document.images].map(i => ({src: i.getAttribute('src').slice(0, 80), alt: i.alt,
    loaded: i.complete && i.naturalWidth > 0, width: i.naturalWidth, height: i.naturalHeight}));
const links = [...document.querySelectorAll('a[href]')].map(a => ({href: a.getAttribute('href'), resolved: a.href}));
const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
return {images, links, ids, title: document.title, text: document.body.innerText.length};
"""


@dataclass
class Page:
    images: list[dict]
    links: list[dict]
    ids: set[str]
    title: str
    text_length: int


def browser_available() -> bool:
    return Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()


MISSING = f"{CHROMIUM} and {CHROMEDRIVER} not found (Debian packages chromium, chromium-driver; `make test` installs them)"


def browser_required() -> bool:
    return os.environ.get("SIREN_BENCH_REQUIRE_BROWSER") == "1"


def require_browser() -> None:
    """Skip the calling test without a browser, or fail it where one is required."""
    if not browser_available():
        pytest.fail(MISSING) if browser_required() else pytest.skip(MISSING)


def open_page(path: Path) -> Page:
    """Load `path` (file://) in headless Chromium, with a fresh profile, and read what it shows once loaded."""
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            driver.set_page_load_timeout(60)
            driver.get(path.resolve().as_uri())  # returns after the load event: every image decoded or failed
            # a loaded machine once saw 16 of the committed report's 17 images right after the load
            # event (the last, a 1.1 MB data URI): wait, up to 30 s, until the page holds as many
            # images as its source writes, each decoded or failed, before reading what it shows
            written = path.read_text(errors="replace").count("<img")
            try:
                WebDriverWait(driver, 30).until(lambda d: d.execute_script(
                    "return document.readyState === 'complete' && document.images.length >= arguments[0]"
                    " && [...document.images].every(i => i.complete)", written))
            except TimeoutException:
                pass  # read the page as it stands: the caller's checks say what is missing
            facts = driver.execute_script(PAGE_FACTS)
        finally:
            driver.quit()
    return Page(facts["images"], facts["links"], set(facts["ids"]), facts["title"], facts["text"])


def broken_links(page: Page, path: Path, root: Path) -> list[str]:
    """Each link that does not resolve: an in-page anchor with no element of that id, a file
    that does not exist, a file outside `root` (the repository), or anything not a file or anchor."""
    problems = []
    for link in page.links:
        href, resolved = link["href"], urlsplit(link["resolved"])
        if href.startswith("#"):
            if unquote(href[1:]) not in page.ids:
                problems.append(f"{href}: no element with this id")
            continue
        if resolved.scheme != "file":
            problems.append(f"{href}: leaves the report ({resolved.scheme} link)")
            continue
        target = Path(unquote(resolved.path))
        if not target.resolve().is_relative_to(root.resolve()):
            problems.append(f"{href}: {target} is outside {root}")
        elif not target.is_file():
            problems.append(f"{href}: {target} does not exist")
        elif resolved.fragment and target.resolve() == path.resolve() and unquote(resolved.fragment) not in page.ids:
            problems.append(f"{href}: no element with id {resolved.fragment!r}")
    return problems
