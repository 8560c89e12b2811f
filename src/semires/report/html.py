"""The HTML page of a Markdown report (``report.html``), rendered by markdown-it-py."""

from __future__ import annotations

from html import escape

from markdown_it import MarkdownIt

#: the page's stylesheet: a centred column, ruled tables with numbers to the right, figures
#: no wider than the page
STYLE = (
    "body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
    "table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "img{max-width:100%}"
)


def markdown_to_html(md: str, title: str) -> str:
    """A self-contained HTML page of the Markdown report ``md`` (CommonMark with GFM tables;
    raw HTML in the text is escaped, never passed through) titled ``title``."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>\n{body}</body></html>\n"
    )
