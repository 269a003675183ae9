"""MkDocs hook: the docstrings use Sphinx roles (``:func:`name```); show them as code, as Sphinx would.

``:func:`~a.b.c``` becomes ``c`` (the ``~`` keeps only the last component), anything else the name itself.
"""
from __future__ import annotations

import re

ROLE = re.compile(r":(?:mod|func|class|data|meth|attr|obj|exc|py:\w+):<code>(~?)([^<]*)</code>")


def _plain(match: re.Match) -> str:
    tilde, name = match.groups()
    return f"<code>{name.rsplit('.', 1)[-1] if tilde else name}</code>"


def on_page_content(html: str, **kwargs) -> str:
    return ROLE.sub(_plain, html)
