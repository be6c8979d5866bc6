"""Version stamps of what the container analysis yields, in a module light enough for the SBOM
replay path (`cli/image_replay.py`) to import without loading the analysis itself."""

ANALYZER_VERSION = "4"  # bump when catalogers or content scanners change what a layer yields
SBOM_RENDER_VERSION = "1"  # bump when `container/sbom.py` changes what a document holds
