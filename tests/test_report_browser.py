"""The committed smoke report opened in a real headless browser (Debian's Chromium): every figure
loads, every link resolves inside the repository. The pipeline test checks the report a fresh ci
run writes the same way (tests/test_pipeline.py)."""

from __future__ import annotations

import re

from tests.browser import broken_links, open_page, require_browser
from tests.conftest import REPO

REPORT = REPO / "reports" / "smoke" / "report.html"


def test_the_committed_report_shows_every_figure_and_every_link_resolves(tmp_path):
    require_browser()
    page = open_page(REPORT)
    written = len(re.findall(r"<img\b", REPORT.read_text()))
    assert page.title.startswith("siren-bench report") and page.text_length > 5000
    assert written >= 10 and len(page.images) == written
    assert [i["alt"] for i in page.images if not i["loaded"]] == []
    assert all(i["alt"].strip() and i["width"] >= 200 and i["height"] >= 100 for i in page.images)
    assert len(page.links) >= 20 and broken_links(page, REPORT, REPO) == []


def test_a_broken_figure_and_broken_links_are_seen(tmp_path):
    """The checks can fail: an image that does not decode, and links to a missing file, a missing
    anchor, a file outside the repository and a web page."""
    require_browser()
    report = tmp_path / "repo" / "reports" / "report.html"
    report.parent.mkdir(parents=True)
    (report.parent / "there.flac").write_bytes(b"fLaC")
    (tmp_path / "outside.txt").write_text("not in the repository")
    report.write_text(
        '<!DOCTYPE html><html><head><title>t</title></head><body><h2 id="top">t</h2>'
        '<img alt="fine" src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg==">'
        '<img alt="broken" src="data:image/png;base64,AAAA">'
        '<a href="there.flac">ok</a> <a href="#top">ok</a> <a href="missing.flac">x</a> <a href="#nowhere">x</a> '
        '<a href="../../outside.txt">x</a> <a href="https://example.invalid/">x</a></body></html>')
    page = open_page(report)
    assert [(i["alt"], i["loaded"]) for i in page.images] == [("fine", True), ("broken", False)]
    problems = broken_links(page, report, tmp_path / "repo")
    assert [p.split(":")[0] for p in problems] == ["missing.flac", "#nowhere", "../../outside.txt", "https"]
