"""The two forms every export shares: CSV cells a spreadsheet will not evaluate, and HTML pages from
the package's Jinja2 templates with autoescaping (hand-in text is shown in them)."""

from __future__ import annotations

import functools

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets evaluate (OWASP: CSV injection)


def text_cell(text: str) -> str:
    """A cell a spreadsheet shows as text: `=HYPERLINK(...)` as a team name must not run."""
    return f"'{text}" if text.startswith(_FORMULA_START) else text


@functools.lru_cache(maxsize=None)
def page_template(name: str):
    """A page of autograder/templates, with autoescaping (hand-in text is shown in these pages); compiled once
    per process, as the web workspace renders pages on every request."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("autograder", "templates"), autoescape=select_autoescape(["html"]))
    return env.get_template(name)
