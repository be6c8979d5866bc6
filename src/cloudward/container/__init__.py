"""Container Security: read images from every source into one model and squash their filesystems in memory."""

from cloudward.container.image import Image, ImageError, Layer
from cloudward.container.sources import open_image
from cloudward.container.squash import FileEntry, ImageFS, Limits, squash

__all__ = ["FileEntry", "Image", "ImageError", "ImageFS", "Layer", "Limits", "open_image", "squash"]
