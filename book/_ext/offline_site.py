"""Sphinx extension: keep the built site free of Thebe's scripts.

Jupyter Book 1 always loads sphinx-thebe, which adds to every page an
inline script declaring `THEBE_JS_URL` (an unpkg.com address) and a loader
script. The book has no live-code buttons (`launch_buttons.thebe: false`),
so they only cost a request and, as the inline script is added twice per
page, a console error ("Identifier 'THEBE_JS_URL' has already been
declared"). This removes them from each page's assets.
"""


def _is_thebe(asset) -> bool:
    filename = getattr(asset, "filename", None) or str(asset)
    body = (getattr(asset, "attributes", None) or {}).get("body", "")
    return "thebe" in filename.lower() or "THEBE_JS_URL" in body


def drop_thebe(app, pagename, templatename, context, doctree):
    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [a for a in context[key] if not _is_thebe(a)]


def setup(app):
    # After sphinx-thebe and the theme have filled the page's asset lists.
    app.connect("html-page-context", drop_thebe, priority=900)
    return {"parallel_read_safe": True}
