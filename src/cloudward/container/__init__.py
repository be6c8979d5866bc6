"""Container Security: read images from every source into one model and squash their filesystems in memory.

The names below load on first use: `cloudward image sbom` re-serving a cached document imports only
`container.sbom_cache`, and loading the squash machinery with the package would cost more than
that whole run. (The squash function itself is `cloudward.container.squash.squash`: a lazy package
attribute could not share its name with the submodule.)
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: `container.sbom_cache` is imported on a path timed in milliseconds
if TYPE_CHECKING:
    from typing import Any

    from cloudward.container.image import Image, ImageError, Layer
    from cloudward.container.sources import open_image
    from cloudward.container.squash import FileEntry, ImageFS, Limits

__all__ = ["FileEntry", "Image", "ImageError", "ImageFS", "Layer", "Limits", "open_image"]

_HOMES = {"Image": "image", "ImageError": "image", "Layer": "image", "open_image": "sources",
          "FileEntry": "squash", "ImageFS": "squash", "Limits": "squash"}


def __getattr__(name: str) -> Any:
    import importlib

    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
