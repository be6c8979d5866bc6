"""Secret-scan sources: inputs turned into a stream of `Blob`s and `SourceError`s.

Each source is a generator; the detection engine is applied to each blob by the caller:

    from cloudward.secrets.sources import Blob, SourceStats, walk

    stats = SourceStats()
    for item in walk(".", stats=stats):
        if isinstance(item, Blob):
            with item.open() as stream:
                ...  # engine reads the stream in chunks
        else:
            ...  # SourceError: record it (item.record(scan)) or count it (item.informational)

Consume each blob before asking for the next one: one-shot blobs (pipes, tar members, stdin) are
only readable until the iterator advances.
"""

from cloudward.engines.archives import ArchiveLimits, archive_kind, iter_archive
from cloudward.engines.blobs import (
    DEFAULT_MAX_SIZE,
    Blob,
    ErrorCode,
    SourceError,
    SourceItem,
    SourceStats,
    sniff_encoding,
)
from cloudward.secrets.sources.environ import EnvironOptions, process_environments, variable_at
from cloudward.secrets.sources.fs import FsOptions, walk
from cloudward.secrets.sources.git import GitOptions, history, plan_history
from cloudward.secrets.sources.stdin import read_stream

__all__ = [
    "DEFAULT_MAX_SIZE",
    "ArchiveLimits",
    "Blob",
    "EnvironOptions",
    "ErrorCode",
    "FsOptions",
    "GitOptions",
    "SourceError",
    "SourceItem",
    "SourceStats",
    "archive_kind",
    "history",
    "iter_archive",
    "plan_history",
    "process_environments",
    "read_stream",
    "sniff_encoding",
    "variable_at",
    "walk",
]
