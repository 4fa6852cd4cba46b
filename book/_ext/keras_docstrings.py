"""Sphinx extension: render keraslayers' Keras-style docstrings.

The docstrings follow Keras's house style (Google sections, Markdown code
fences, a `Reference:` section), which Keras renders with its own Markdown
tooling. Napoleon handles the Google sections; this hook turns Markdown
fences into reStructuredText code blocks and `Reference:` into napoleon's
`References:` section, so that autodoc can render them without warnings.
"""

import re

_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


def _convert(lines: list[str]) -> list[str]:
    out, inside, indent = [], False, ""
    for line in lines:
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
            out.append(line)
    return out


def process(app, what, name, obj, options, lines):
    lines[:] = _convert(lines)


def setup(app):
    app.connect("autodoc-process-docstring", process, priority=400)
    return {"parallel_read_safe": True}
