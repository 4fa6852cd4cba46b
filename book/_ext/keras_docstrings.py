"""Sphinx extension: render keraslayers' Keras-style docstrings.

The docstrings follow Keras's house style (Google sections, Markdown code
fences, a `Reference:` section), which Keras renders with its own Markdown
tooling. Napoleon handles the Google sections; this hook turns Markdown
fences into reStructuredText code blocks, `Reference:` into napoleon's
`References:` section, Markdown links into reST links and Markdown code
spans into reST literals, so that autodoc can render them without
warnings or raw Markdown.
"""

import re
import unicodedata

_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
# A Markdown link to a web page, or a code span.
_INLINE = re.compile(
    r"\[(?P<text>[^\]]+)\]\((?P<url>https?://[^)\s]+)\)"
    r"|(?P<ticks>`+)(?P<code>[^`]+)(?P=ticks)(?!`)"
)


def _may_follow(char: str) -> bool:
    """reST ends inline markup only before whitespace or punctuation (so
    ``x``² needs an escaped space between: ``x``\\ ²)."""
    return (
        not char
        or char.isspace()
        or unicodedata.category(char) in ("Pe", "Pi", "Pf", "Pd", "Po")
    )


def _may_precede(char: str) -> bool:
    return (
        not char
        or char.isspace()
        or unicodedata.category(char) in ("Ps", "Pi", "Pf", "Pd", "Po")
    )


def _inline(line: str) -> str:
    out, last = [], 0
    for match in _INLINE.finditer(line):
        text, url, code = match["text"], match["url"], match["code"]
        markup = f"`{text} <{url}>`__" if url else f"``{code}``"
        before = line[match.start() - 1] if match.start() else ""
        after = line[match.end()] if match.end() < len(line) else ""
        out.append(line[last : match.start()])
        out.append(
            ("" if _may_precede(before) else "\\ ")
            + markup
            + ("" if _may_follow(after) else "\\ ")
        )
        last = match.end()
    out.append(line[last:])
    return "".join(out)


def _join_split_spans(lines: list[str]) -> list[str]:
    """A code span that runs onto the next line (`(outputs,` / `state)`)
    becomes one line: reST literals cannot span lines here."""
    out, inside = [], False
    for line in lines:
        unmatched = re.sub(r"``[^`]*``", "", line).count("`") % 2 == 1
        if _FENCE.match(line):
            inside = not inside
        elif out and out[-1][1] and line.strip():
            joined = f"{out[-1][0]} {line.strip()}"
            unmatched = re.sub(r"``[^`]*``", "", joined).count("`") % 2 == 1
            out[-1] = (joined, unmatched)
            continue
        out.append((line, unmatched and not inside and not _FENCE.match(line)))
    return [line for line, _ in out]


def _convert(lines: list[str]) -> list[str]:
    out, inside, indent = [], False, ""
    for line in _join_split_spans(lines):
        match = _FENCE.match(line)
        if match and not inside:
            indent = match.group(1)
            language = match.group(2) or "text"
            out += [f"{indent}.. code-block:: {language}", ""]
            inside = True
        elif match and inside:
            out.append("")
            inside = False
        elif inside:
            out.append(
                f"{indent}    {line[len(indent) :]}" if line.strip() else ""
            )
        elif line.strip() in ("Reference:", "References:"):
            out.append(
                line.replace("Reference:", "References:").replace(
                    "Referencess:", "References:"
                )
            )
        else:
            out.append(_inline(line))
    return out


def process(app, what, name, obj, options, lines):
    lines[:] = _convert(lines)


def setup(app):
    app.connect("autodoc-process-docstring", process, priority=400)
    return {"parallel_read_safe": True}
