"""Syntax highlighting of Rego sources as HTML spans (keywords, strings, comments, numbers, rule heads)."""

import re

from markupsafe import Markup, escape

KEYWORDS = ("package", "import", "default", "if", "else", "not", "some", "every", "in", "contains", "with", "as",
            "true", "false", "null")
_TOKEN = re.compile(r'(?P<comment>#[^\n]*)|(?P<string>"(?:[^"\\\n]|\\.)*"|`[^`]*`)|(?P<number>\b\d+(?:\.\d+)?\b)'
                    r"|(?P<keyword>\b(?:" + "|".join(KEYWORDS) + r")\b)")


def highlight(source: str) -> Markup:
    """`source` as escaped HTML, its tokens wrapped in `<span class="rego-KIND">`."""
    parts: list[str] = []
    position = 0
    for match in _TOKEN.finditer(source):
        parts.append(str(escape(source[position:match.start()])))
        kind = match.lastgroup or "text"
        parts.append(f'<span class="rego-{kind}">{escape(match.group())}</span>')
        position = match.end()
    parts.append(str(escape(source[position:])))
    return Markup("".join(parts))
