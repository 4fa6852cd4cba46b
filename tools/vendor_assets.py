"""Copies the book's browser assets from installed Python packages into a
static folder, so the built site requests nothing from outside itself.

MathJax 3 comes from the `django-static-mathjax` wheel on PyPI (it ships
MathJax 3.2.2's `es5` build and depends on nothing). Sphinx would otherwise
load MathJax from a CDN. The folder is given to Sphinx through
`html_static_path`; it is not the book's `_static/`, whose .js and .css
files Jupyter Book 1 would inject into every page.

Usage: python tools/vendor_assets.py _vendor
"""

import shutil
import sys
from pathlib import Path

import mathjax  # the django-static-mathjax package

# The combined TeX component, the CommonHTML fonts, and the components it
# may load on demand (TeX extensions, menu, accessibility).
MATHJAX_PARTS = ["tex-mml-chtml.js", "output", "input", "ui", "a11y", "sre"]


def main(target: str) -> None:
    source = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (source / "tex-mml-chtml.js").is_file():
        raise SystemExit(f"vendor_assets: no MathJax build under {source}")
    destination = Path(target) / "mathjax"
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for part in MATHJAX_PARTS:
        path = source / part
        if path.is_dir():
            shutil.copytree(path, destination / part)
        elif path.is_file():
            shutil.copy2(path, destination / part)
    print(f"vendor_assets: MathJax copied to {destination}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "_vendor")
