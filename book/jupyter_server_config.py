# Jupyter server configuration installed into .venv/etc/jupyter by the
# Makefile, so it applies to `make lab`.
#
# A chapter opens as a notebook through Jupytext. When its kernel starts,
# JupyterLab writes the kernel's `language_info` into the notebook's
# metadata; a chapter's file has none (Jupytext drops it on save), so every
# chapter would show as unsaved the moment it opened. JupyterLab skips a
# metadata update equal to what is there, so the server hands out each
# notebook with the language_info this environment's kernel reports: the
# same Python, the same ipykernel, hence the same dict.
from ipykernel.ipkernel import IPythonKernel
from jupyter_server.services.contents.largefilemanager import (
    AsyncLargeFileManager,
)
from jupytext.async_contentsmanager import (
    build_async_jupytext_contents_manager_class,
)


class ChapterContentsManager(
    build_async_jupytext_contents_manager_class(AsyncLargeFileManager)
):
    async def get(self, path, content=True, type=None, format=None, **kwargs):
        model = await super().get(
            path, content=content, type=type, format=format, **kwargs
        )
        if content and model.get("type") == "notebook":
            metadata = model["content"]["metadata"]
            metadata.setdefault(
                "language_info", dict(IPythonKernel.language_info)
            )
        return model


c = get_config()  # noqa: F821
c.ServerApp.contents_manager_class = ChapterContentsManager
