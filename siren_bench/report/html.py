"""report.html: report.md as one self-contained page, for readers without a markdown viewer.

Figures are embedded as base64 data URIs and the style sheet is inline, so the page can be
mailed or archived on its own; it loads nothing from the network. Links to the listening
clips stay relative (audio/ beside the page). Tables longer than FOLD_ROWS rows are folded into
a <details> element that says how many rows it holds, so the page reads top to bottom.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import xml.etree.ElementTree as etree
from pathlib import Path
from urllib.parse import unquote, urlparse

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; line-height: 1.5; color: #1a1a1a;
       max-width: 70rem; margin: 2rem auto; padding: 0 1rem; }
h1, h2, h3 { line-height: 1.25; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .9rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f3f3f3; padding: 0 .2rem; border-radius: 3px; font-size: .9em; }
pre code { display: block; padding: .6rem; overflow-x: auto; }
img { max-width: 100%; height: auto; }
"""


FOLD_ROWS = 12


class _FoldLongTables(Treeprocessor):
    """Wrap every table of more than FOLD_ROWS body rows in <details> with a one-line summary."""

    def run(self, root: etree.Element) -> None:
        for parent in list(root.iter()):
            for index, child in enumerate(list(parent)):
                if child.tag != "table":
                    continue
                rows = len(child.findall("./tbody/tr"))
                if rows <= FOLD_ROWS:
                    continue
                parent.remove(child)
                fold = etree.Element("details")
                etree.SubElement(fold, "summary").text = f"table of {rows} rows (click to unfold)"
                fold.append(child)
                fold.tail, child.tail = child.tail, None
                parent.insert(index, fold)


class ReportImageError(ValueError):
    """An image the page cannot embed; the message names the image and the problem."""


class _EmbedImages(Treeprocessor):
    """Replace every <img src> with a data URI of the file it names (relative to base_dir)."""

    def __init__(self, md: markdown.Markdown, base_dir: Path):
        super().__init__(md)
        self.base_dir = base_dir

    def run(self, root: etree.Element) -> None:
        for image in root.iter("img"):
            src = image.get("src", "")
            if src.startswith("data:"):
                continue
            if urlparse(src).scheme or src.startswith("/"):
                raise ReportImageError(f"image {src!r}: not a path relative to the report; the page must not load it")
            path = self.base_dir / unquote(src)
            mime = mimetypes.guess_type(path.name)[0]
            if not path.is_file():
                raise ReportImageError(f"image {src!r}: no such file {path}")
            if mime is None or not mime.startswith("image/"):
                raise ReportImageError(f"image {src!r}: {path} is not a known image type")
            image.set("src", f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}")


class _EmbedImagesExtension(Extension):
    def __init__(self, base_dir: Path):
        super().__init__()
        self.base_dir = base_dir

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 (the markdown package's name)
        # priority 5: after the inline processor (20) has turned ![..](..) into <img>
        md.treeprocessors.register(_EmbedImages(md, self.base_dir), "embed_images", 5)
        md.treeprocessors.register(_FoldLongTables(md), "fold_long_tables", 4)


def render(text: str, base_dir: Path) -> str:
    """The page for markdown `text` whose image paths are relative to `base_dir`; its title is
    the first level-1 heading."""
    title = next((line[2:].replace("`", "") for line in text.splitlines() if line.startswith("# ")), "report")
    body = markdown.markdown(text, extensions=["tables", _EmbedImagesExtension(Path(base_dir))], output_format="html")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
{body}
</body>
</html>
"""
