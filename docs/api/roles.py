"""A mkdocs hook: the Sphinx roles of the docstrings (``:class:`lattice.io.model.Model` ``,
``:func:`~lattice.samplers.chains.sample` ``) become cross-reference links of mkdocs-autorefs.

A role renders as ``:class:<code>NAME</code>``; it is replaced by an autoref to NAME, titled NAME
(or its last part after ``~``). A full ``lattice.`` name must resolve to an object of the API
pages (else the strict build fails, naming it); any other name (relative, or in another package)
links where it resolves and is plain code where it does not.
"""

from __future__ import annotations

import html
import re

ROLE = re.compile(r":(?:mod|class|func|meth|attr|data|exc|obj):<code>(~?)([\w.]+)(\(\))?</code>")


def _autoref(match: re.Match) -> str:
    tilde, name, call = match.groups()
    title = (name.rsplit(".", 1)[-1] if tilde else name) + (call or "")
    optional = "" if name.startswith("lattice.") else " optional"
    ident = html.escape(name, quote=True)
    return f'<autoref identifier="{ident}"{optional}><code>{title}</code></autoref>'


def on_page_content(html_text: str, **kwargs) -> str:
    """The page's HTML with every Sphinx role replaced by an autoref."""
    return ROLE.sub(_autoref, html_text)
