"""Copies the book's browser assets from installed Python packages into a
static folder, so the built site requests nothing from outside itself.

MathJax 3 comes from the `django-static-mathjax` wheel on PyPI (it ships
MathJax 3.2.2's `es5` build and depends on nothing). Sphinx would otherwise
load MathJax from a CDN. The folder's `static/` is given to Sphinx through
`html_static_path`; it is not the book's `_static/`, whose .js and .css
files Jupyter Book 1 would inject into every page.

Its `root/` (Sphinx's `html_extra_path`, copied to the site's root) holds
`favicon.ico`: the landing page that Jupyter Book generates is a redirect
that links no icon, so a browser asks for `/favicon.ico` there, and without
one logs a 404. The icon is drawn here (Pillow, a dependency of
matplotlib) from the same shapes as `book/favicon.svg`.

Usage: python tools/vendor_assets.py _vendor
"""

import shutil
import sys
from pathlib import Path

import mathjax  # the django-static-mathjax package
from PIL import Image, ImageDraw

# The combined TeX component, the CommonHTML fonts, and the components it
# may load on demand (TeX extensions, menu, accessibility).
MATHJAX_PARTS = ["tex-mml-chtml.js", "output", "input", "ui", "a11y", "sre"]


def _bezier(p0, p1, p2, p3, steps=24):
    return [
        tuple(
            (1 - t) ** 3 * a
            + 3 * (1 - t) ** 2 * t * b
            + 3 * (1 - t) * t**2 * c
            + t**3 * d
            for a, b, c, d in zip(p0, p1, p2, p3, strict=True)
        )
        for t in (i / steps for i in range(steps + 1))
    ]


def favicon(path: Path, size: int = 64) -> None:
    """book/favicon.svg's rounded square and bell curve, as an .ico."""
    k = size / 32
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle(
        (0, 0, size - 1, size - 1), radius=6 * k, fill="#1f77b4"
    )
    # The SVG path "M4 24 C10 24 10 8 16 8 S22 24 28 24".
    curve = (
        _bezier((4, 24), (10, 24), (10, 8), (16, 8))
        + _bezier((16, 8), (22, 8), (22, 24), (28, 24))[1:]
    )
    draw.line(
        [(x * k, y * k) for x, y in curve], fill="white", width=round(3 * k)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, sizes=[(16, 16), (32, 32), (48, 48), (64, 64)])


def main(target: str) -> None:
    source = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (source / "tex-mml-chtml.js").is_file():
        raise SystemExit(f"vendor_assets: no MathJax build under {source}")
    favicon(Path(target) / "root" / "favicon.ico")
    destination = Path(target) / "static" / "mathjax"
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
