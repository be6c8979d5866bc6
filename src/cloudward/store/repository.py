"""The findings store: record scans, query findings, diff scans, manage suppressions.

This and `engine.py` are the only code in cloudward that knows SQL. Every public method is one
transaction; writes hold cloudward's write lock (SQLite `BEGIN IMMEDIATE`, a PostgreSQL advisory
lock), so two processes recording at once queue instead of interleaving their upserts, and an
interrupted `record_scan` (Ctrl-C included) rolls back whole.

Time: a scan's observations are all dated by the scan's `started`; first_seen, last_seen and
fixed_at are scan start times. Ordering scans by start keeps everything consistent even when a
slow scan is recorded after a faster, later one: an older scan never reopens what a newer one
found fixed, and never closes what a newer one saw.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from cloudward.core.errors import StoreError, UsageError
from cloudward.core.finding import Finding, Target, utcnow
from cloudward.core.scan import ScanResult, ScanStatus, TargetError
from cloudward.core.severity import Category, Severity
from cloudward.store.engine import create_store_engine, mask_url, migrate, scrub, store_url, write_connection
from cloudward.store.models import (
    FIXED,
    OPEN,
    FimBaselineRow,
    FimEntryRow,
    FindingRow,
    ScanFindingRow,
    ScanRow,
    SuppressionRow,
)
from cloudward.store.scope import Subject, covers, errored
from cloudward.store.views import (
    FimBaselineInfo,
    FindingQuery,
    RecordSummary,
    ScanDiff,
    ScanInfo,
    StoredFinding,
    SuppressionInfo,
)

if TYPE_CHECKING:
    from cloudward.core.config import Settings

T = TypeVar("T")

# Bound parameters per IN (...): far below SQLite's and PostgreSQL's limits.
CHUNK = 500
_HEX = re.compile(r"[0-9a-f]{1,64}")
_STATUSES = ("open", "fixed", "all")


def open_store(settings: Settings) -> Store:
    """Open (creating and migrating to head as needed) the store the settings name.

    Use as a context manager: `with open_store(settings) as store: store.record_scan(result)`.
    """
    return Store.open(store_url(settings))


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL; escaping it on every backend keeps the two stores identical.
    return text.replace("\x00", "\\x00")


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def scope_key(targets: Iterable[str]) -> str:
    """A scan's scope as a short hash of its sorted, de-duplicated targets."""
    canonical = json.dumps(sorted({t.strip() for t in targets}), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _glob_to_like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


# --- row <-> core model -----------------------------------------------------------------------


def _finding_values(finding: Finding) -> dict[str, Any]:
    """A Finding as column values; JSON columns get pydantic's JSON-mode dump, so evidence holding
    bytes, datetimes or sets is stored as what the JSON report would show."""
    data = finding.model_dump(mode="json", include={
        "location", "evidence", "references", "attack", "compliance", "tags"})
    return {
        "rule_id": _clean(finding.rule_id),
        "title": _clean(finding.title),
        "severity": finding.severity.value,
        "severity_rank": finding.severity.rank,
        "category": finding.category.value,
        "target_kind": _clean(finding.target.kind),
        "target_name": _clean(finding.target.name),
        "description": _clean(finding.description),
        "remediation": _clean(finding.remediation),
        **data,
    }


def _to_finding(row: FindingRow) -> Finding:
    return Finding(
        rule_id=row.rule_id,
        title=row.title,
        severity=Severity(row.severity),
        category=Category(row.category),
        target=Target(kind=row.target_kind, name=row.target_name),
        location=row.location or {},
        evidence=row.evidence or {},
        description=row.description,
        remediation=row.remediation,
        references=row.references or [],
        attack=row.attack or [],
        compliance=row.compliance or {},
        tags=row.tags or [],
        fingerprint=row.fingerprint,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        detected_at=row.last_seen,
    )


def _to_stored(row: FindingRow, suppression: SuppressionInfo | None) -> StoredFinding:
    status: Literal["open", "fixed"] = "fixed" if row.status == FIXED else "open"
    return StoredFinding(
        finding=_to_finding(row),
        status=status,
        first_scan_id=row.first_scan_id,
        last_scan_id=row.last_scan_id,
        fixed_at=row.fixed_at,
        fixed_scan_id=row.fixed_scan_id,
        suppression=suppression,
    )


def _to_scan(row: ScanRow) -> ScanInfo:
    return ScanInfo(
        id=row.id,
        kind=row.kind,
        status=ScanStatus(row.status),
        started=row.started,
        finished=row.finished,
        recorded=row.recorded,
        targets=list(row.targets or []),
        errors=[TargetError.model_validate(e) for e in row.errors or []],
        stats=dict(row.stats or {}),
        finding_count=row.finding_count,
    )


def _to_suppression(row: SuppressionRow) -> SuppressionInfo:
    return SuppressionInfo(
        id=row.id, reason=row.reason, author=row.author, created=row.created, expires=row.expires,
        fingerprint=row.fingerprint, rule_id=row.rule_id, target_pattern=row.target_pattern,
    )


def _to_fim(row: FimBaselineRow, entries: dict[str, dict[str, Any]] | None = None) -> FimBaselineInfo:
    return FimBaselineInfo(id=row.id, name=row.name, root=row.root, created=row.created, paths=list(row.paths or []),
                           entry_count=row.entry_count, authorized_keys=list(row.authorized_keys or []),
                           entries=entries or {})


def _subject(row: FindingRow) -> Subject:
    return Subject(row.target_kind, row.target_name, row.location or {})


def _order(items: list[StoredFinding]) -> list[StoredFinding]:
    def key(item: StoredFinding) -> tuple[int, str, str, str, str]:
        f = item.finding
        return (-f.severity.rank, f.rule_id, f.target.kind, f.target.name, f.fingerprint)

    return sorted(items, key=key)


class _ActiveSuppressions:
    """The suppressions in force at one instant, matched in Python (there are few of them, and
    glob matching of rule ids and targets is not portable SQL)."""

    def __init__(self, rows: Iterable[SuppressionRow]) -> None:
        self.by_fingerprint: dict[str, SuppressionInfo] = {}
        self.by_rule: list[SuppressionInfo] = []
        for row in rows:
            info = _to_suppression(row)
            if info.fingerprint:
                self.by_fingerprint.setdefault(info.fingerprint, info)
            else:
                self.by_rule.append(info)

    def match(self, row: FindingRow) -> SuppressionInfo | None:
        hit = self.by_fingerprint.get(row.fingerprint)
        if hit is not None:
            return hit
        for info in self.by_rule:
            if info.rule_id and fnmatchcase(row.rule_id, info.rule_id) and (
                not info.target_pattern or fnmatchcase(row.target_name, info.target_pattern)
            ):
                return info
        return None


class Store:
    """A findings store over one SQLAlchemy Engine. Create with `open_store(settings)` or
    `Store.open(url)`; close with `close()` or a `with` block."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        # Replaceable so tests can move time (suppression expiry) without sleeping.
        self.clock = clock

    @classmethod
    def open(cls, url: str) -> Store:
        engine = create_store_engine(url)
        try:
            migrate(engine)
        except StoreError:
            engine.dispose()
            raise
        except (SQLAlchemyError, OSError) as exc:
            engine.dispose()
            raise StoreError(f"cannot open findings store {mask_url(engine.url)}: "
                             f"{scrub(_reason(exc), engine.url)}") from None
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def url(self) -> str:
        """The store's URL with any password masked."""
        return mask_url(self.engine.url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- transactions -------------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise StoreError(f"findings store {self.url}: {scrub(_reason(exc), self.engine.url)}") from None

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._errors(), self.engine.connect() as conn, Session(bind=conn) as session:
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._errors(), write_connection(self.engine) as conn:
            session = Session(bind=conn, expire_on_commit=False)
            try:
                yield session
                session.flush()
            finally:
                session.close()

    # other tables in the same database (the server's users, jobs, schedules) use the same sessions:
    # the same write queue, the same masked errors
    read_session = _read
    write_session = _write

    # --- recording ----------------------------------------------------------------------------

    def record_scan(self, result: ScanResult) -> RecordSummary:
        """Store one scan and fold its findings into the findings' state, in one transaction.

        Findings are upserted by fingerprint (first_seen kept, last_seen advanced, reopened if
        fixed). Open findings of the same kind inside the scan's scope that it did not see are
        marked fixed, but only when the scan completed: a cancelled or failed scan did not look
        at everything, and a target it recorded an error for was not looked at either.
        Recording the same scan id again replaces what that scan saw.
        """
        unique: dict[str, Finding] = {}
        for finding in result.findings:
            unique[finding.fingerprint] = finding
        seen_at = _aware(result.started)
        dumped = result.model_dump(mode="json", include={"errors", "stats"})
        new = reopened = seen_again = 0
        with self._write() as session:
            scan = session.get(ScanRow, result.id)
            replaced: set[str] = set()
            if scan is None:
                scan = ScanRow(id=result.id)
                session.add(scan)
            else:
                replaced = self._seen_by(session, result.id)
                session.execute(delete(ScanFindingRow).where(ScanFindingRow.scan_id == result.id))
            scan.kind = result.kind
            scan.scope = scope_key(result.targets)
            scan.status = result.status.value
            scan.started = seen_at
            scan.finished = result.finished
            scan.recorded = self.clock()
            scan.targets = [_clean(t) for t in result.targets]
            scan.errors = dumped["errors"]
            scan.stats = dumped["stats"]
            scan.finding_count = len(unique)
            session.flush()

            existing = self._rows(session, list(unique))
            for fingerprint, finding in unique.items():
                values = _finding_values(finding)
                row = existing.get(fingerprint)
                if row is None:
                    session.add(FindingRow(
                        fingerprint=fingerprint, **values, first_seen=seen_at, last_seen=seen_at,
                        first_scan_id=result.id, last_scan_id=result.id, status=OPEN,
                    ))
                    new += 1
                    continue
                if seen_at >= row.last_seen:  # the newest observation's rule text wins
                    for name, value in values.items():
                        setattr(row, name, value)
                    row.last_seen, row.last_scan_id = seen_at, result.id
                if seen_at < row.first_seen:
                    row.first_seen, row.first_scan_id = seen_at, result.id
                newer_than_fix = row.fixed_at is None or seen_at > row.fixed_at
                if row.status == FIXED and (newer_than_fix or row.fixed_scan_id == result.id):
                    row.status, row.fixed_at, row.fixed_scan_id = OPEN, None, None
                    reopened += 1
                else:
                    seen_again += 1
            session.flush()
            if unique:
                session.execute(insert(ScanFindingRow),
                                [{"scan_id": result.id, "fingerprint": fp} for fp in unique])
            self._drop_orphans(session, sorted(replaced - unique.keys()))
            fixed = 0
            if result.status is ScanStatus.COMPLETED:
                fixed = self._mark_fixed(session, result, seen_at, set(unique))
        return RecordSummary(scan_id=result.id, total=len(unique), new=new, reopened=reopened,
                             seen_again=seen_again, fixed=fixed)

    def _drop_orphans(self, session: Session, fingerprints: Sequence[str]) -> None:
        """After a scan is re-recorded, findings that only its earlier recording had seen were, as
        far as the store can now tell, never seen: delete them rather than leave them open with no
        scan able to close them."""
        seen_anywhere = select(ScanFindingRow.fingerprint).where(
            ScanFindingRow.fingerprint == FindingRow.fingerprint).exists()
        for chunk in _chunks(fingerprints):
            session.execute(
                delete(FindingRow).where(FindingRow.fingerprint.in_(chunk), ~seen_anywhere),
                execution_options={"synchronize_session": False},
            )

    def _mark_fixed(self, session: Session, result: ScanResult, seen_at: datetime, seen: set[str]) -> int:
        """Close the open findings this scan was responsible for and did not see."""
        seen_by_kind = (
            select(ScanFindingRow.fingerprint)
            .join(ScanRow, ScanRow.id == ScanFindingRow.scan_id)
            .where(ScanRow.kind == result.kind, ScanFindingRow.fingerprint == FindingRow.fingerprint)
            .exists()
        )
        candidates = session.execute(
            select(FindingRow.fingerprint, FindingRow.target_kind, FindingRow.target_name,
                   FindingRow.location)
            .where(FindingRow.status == OPEN, FindingRow.last_seen < seen_at, seen_by_kind)
        ).all()
        error_targets = [e.target for e in result.errors]
        stats = result.model_dump(mode="json", include={"stats"})["stats"]
        closing = [
            fp for fp, kind, name, location in candidates
            if fp not in seen
            and covers(result.kind, result.targets, stats, Subject(kind, name, location or {}))
            and not errored(error_targets, Subject(kind, name, location or {}))
        ]
        for chunk in _chunks(closing):
            session.execute(
                update(FindingRow).where(FindingRow.fingerprint.in_(chunk))
                .values(status=FIXED, fixed_at=seen_at, fixed_scan_id=result.id),
                execution_options={"synchronize_session": False},
            )
        return len(closing)

    # --- findings -----------------------------------------------------------------------------

    def list_findings(self, query: FindingQuery | None = None) -> list[StoredFinding]:
        """Findings matching `query`, most severe first. Suppressed ones are left out unless
        `query.include_suppressed`, in which case they carry their `suppression`."""
        query = query or FindingQuery()
        if query.status not in _STATUSES:
            choices = ", ".join(_STATUSES)
            raise UsageError(f"--status: unknown status {query.status!r} (choose from {choices})")
        stmt = select(FindingRow)
        if query.status != "all":
            stmt = stmt.where(FindingRow.status == query.status)
        if query.min_severity is not None:
            stmt = stmt.where(FindingRow.severity_rank >= query.min_severity.rank)
        if query.category:
            stmt = stmt.where(FindingRow.category == _category(query.category))
        if query.rule_id:
            if any(c in query.rule_id for c in "*?"):
                stmt = stmt.where(FindingRow.rule_id.like(_glob_to_like(query.rule_id), escape="\\"))
            else:
                stmt = stmt.where(FindingRow.rule_id == query.rule_id)
        if query.target:
            stmt = stmt.where(FindingRow.target_name.icontains(query.target, autoescape=True))
        with self._read() as session:
            if query.scan_id:
                scan = self._scan(session, query.scan_id)
                stmt = stmt.where(FindingRow.fingerprint.in_(
                    select(ScanFindingRow.fingerprint).where(ScanFindingRow.scan_id == scan.id)))
            suppressions = self._active_suppressions(session)
            out = []
            for row in session.scalars(stmt):
                suppression = suppressions.match(row)
                if suppression is None or query.include_suppressed:
                    out.append(_to_stored(row, suppression))
        return _order(out)

    def get_finding(self, ref: str) -> StoredFinding:
        """One finding by fingerprint or unique fingerprint prefix (UsageError otherwise)."""
        with self._read() as session:
            row = session.get_one(FindingRow, self._resolve_fingerprint(session, ref))
            return _to_stored(row, self._active_suppressions(session).match(row))

    def resolve_fingerprint(self, ref: str) -> str:
        with self._read() as session:
            return self._resolve_fingerprint(session, ref)

    def finding_scans(self, ref: str, limit: int = 20) -> list[ScanInfo]:
        """The scans that saw a finding, newest first."""
        with self._read() as session:
            fingerprint = self._resolve_fingerprint(session, ref)
            rows = session.scalars(
                select(ScanRow).join(ScanFindingRow, ScanFindingRow.scan_id == ScanRow.id)
                .where(ScanFindingRow.fingerprint == fingerprint)
                .order_by(ScanRow.started.desc(), ScanRow.recorded.desc()).limit(limit)
            ).all()
            return [_to_scan(r) for r in rows]

    # --- scans --------------------------------------------------------------------------------

    def list_scans(self, kind: str | None = None, limit: int | None = 50) -> list[ScanInfo]:
        """Recorded scans, newest first."""
        stmt = select(ScanRow).order_by(ScanRow.started.desc(), ScanRow.recorded.desc())
        if kind:
            stmt = stmt.where(ScanRow.kind == kind)
        if limit:
            stmt = stmt.limit(limit)
        with self._read() as session:
            return [_to_scan(r) for r in session.scalars(stmt)]

    def get_scan(self, ref: str) -> ScanInfo:
        """A scan by id, unique id prefix, or `latest`."""
        with self._read() as session:
            return _to_scan(self._scan(session, ref))

    def diff(self, before: str | None = None, after: str | None = None,
             include_suppressed: bool = False) -> ScanDiff:
        """Compare two scans. Defaults: `after` is the latest scan (or, given only `before`, the
        latest later scan of its kind and scope); `before` is the previous *completed* scan of
        `after`'s kind and scope (a cancelled baseline would make old findings look new)."""
        with self._read() as session:
            if after is not None:
                after_row = self._scan(session, after)
            elif before is not None:
                after_row = self._later_scan(session, self._scan(session, before))
            else:
                after_row = self._latest_scan(session)
            before_row = (self._scan(session, before) if before is not None
                          else self._previous_scan(session, after_row))
            seen_before = self._seen_by(session, before_row.id)
            seen_after = self._seen_by(session, after_row.id)
            rows = self._rows(session, sorted(seen_before | seen_after))
            suppressions = self._active_suppressions(session)
            result = ScanDiff(before=_to_scan(before_row), after=_to_scan(after_row))
            complete = after_row.status == ScanStatus.COMPLETED.value
            error_targets = [TargetError.model_validate(e).target for e in after_row.errors or []]
            for fingerprint, row in rows.items():
                suppression = suppressions.match(row)
                if suppression is not None and not include_suppressed:
                    continue
                item = _to_stored(row, suppression)
                if fingerprint in seen_after:
                    (result.still_open if fingerprint in seen_before else result.new).append(item)
                elif complete and covers(after_row.kind, after_row.targets or [], after_row.stats or {},
                                         _subject(row)) and not errored(error_targets, _subject(row)):
                    result.fixed.append(item)
                else:
                    result.not_rechecked.append(item)
        for bucket in (result.new, result.fixed, result.still_open, result.not_rechecked):
            bucket[:] = _order(bucket)
        return result

    # --- suppressions -------------------------------------------------------------------------

    def suppress(self, fingerprint: str | None = None, *, rule_id: str | None = None,
                 target_pattern: str | None = None, reason: str, author: str,
                 expires: datetime | None = None) -> SuppressionInfo:
        """Suppress one finding (fingerprint or unique prefix) or a rule id glob, optionally only
        on targets matching `target_pattern`. Suppressing the same subject again replaces the
        reason, author and expiry."""
        if not reason.strip():
            raise UsageError("a suppression needs a reason (--reason)")
        if (fingerprint is None) == (rule_id is None):
            raise UsageError("suppress either one finding (FINGERPRINT) or a rule (--rule), not both")
        if fingerprint is not None and target_pattern:
            raise UsageError("--target narrows a rule suppression; a fingerprint is already one finding")
        with self._write() as session:
            if fingerprint is not None:
                fingerprint = self._resolve_fingerprint(session, fingerprint)
            row = self._suppression_rows(session, fingerprint, rule_id, target_pattern).first()
            if row is None:
                row = SuppressionRow(fingerprint=fingerprint, rule_id=rule_id,
                                     target_pattern=target_pattern or None)
                session.add(row)
            row.reason, row.author = reason.strip(), author
            row.created, row.expires = self.clock(), _aware(expires) if expires else None
            session.flush()
            return _to_suppression(row)

    def unsuppress(self, fingerprint: str | None = None, *, rule_id: str | None = None,
                   target_pattern: str | None = None) -> int:
        """Remove the suppression of that exact subject; UsageError when there is none."""
        if (fingerprint is None) == (rule_id is None):
            raise UsageError("unsuppress either one finding (FINGERPRINT) or a rule (--rule), not both")
        with self._write() as session:
            if fingerprint is not None:
                fingerprint = self._resolve_fingerprint(session, fingerprint)
            rows = self._suppression_rows(session, fingerprint, rule_id, target_pattern).all()
            if not rows:
                subject = SuppressionInfo(0, "", "", self.clock(), None, fingerprint, rule_id,
                                          target_pattern).subject
                raise UsageError(f"no suppression for {subject}")
            for row in rows:
                session.delete(row)
            return len(rows)

    def list_suppressions(self, include_expired: bool = False) -> list[SuppressionInfo]:
        with self._read() as session:
            if include_expired:
                rows: Iterable[SuppressionRow] = session.scalars(
                    select(SuppressionRow).order_by(SuppressionRow.id))
            else:
                rows = self._active_rows(session)
            return [_to_suppression(r) for r in rows]

    # --- helpers ------------------------------------------------------------------------------

    # --- file integrity baselines -------------------------------------------------------------

    def save_fim_baseline(self, root: str, entries: Mapping[str, Mapping[str, Any]], *, paths: Sequence[str],
                          authorized_keys: Iterable[str] = (), name: str = "default") -> FimBaselineInfo:
        """Record (or replace, in one transaction) the baseline `name` of `root`: {path: attributes}."""
        if not name.strip():
            raise UsageError("a baseline needs a name")
        keys = sorted({_clean(str(k)) for k in authorized_keys})
        with self._write() as session:
            session.execute(delete(FimBaselineRow).where(FimBaselineRow.root == _clean(root),
                                                         FimBaselineRow.name == name))
            row = FimBaselineRow(name=name, root=_clean(root), created=self.clock(),
                                 paths=[_clean(p) for p in paths], entry_count=len(entries),
                                 authorized_keys=keys)
            session.add(row)
            session.flush()
            items = [{"baseline_id": row.id, "path": _clean(path), "attributes": dict(attrs)}
                     for path, attrs in entries.items()]
            for chunk in _chunks(items, 2000):
                session.execute(insert(FimEntryRow), list(chunk))
            return _to_fim(row)

    def get_fim_baseline(self, root: str, name: str = "default", *, entries: bool = True) -> FimBaselineInfo | None:
        """The baseline `name` of `root` (with its entries unless `entries=False`), or None."""
        with self._read() as session:
            row = session.scalars(select(FimBaselineRow).where(
                FimBaselineRow.root == _clean(root), FimBaselineRow.name == name)).first()
            if row is None:
                return None
            loaded: dict[str, dict[str, Any]] = {}
            if entries:
                for path, attrs in session.execute(
                        select(FimEntryRow.path, FimEntryRow.attributes).where(FimEntryRow.baseline_id == row.id)):
                    loaded[path] = dict(attrs or {})
            return _to_fim(row, loaded)

    def list_fim_baselines(self) -> list[FimBaselineInfo]:
        with self._read() as session:
            rows = session.scalars(select(FimBaselineRow).order_by(FimBaselineRow.root, FimBaselineRow.name))
            return [_to_fim(row) for row in rows]

    def delete_fim_baseline(self, root: str, name: str = "default") -> bool:
        with self._write() as session:
            row = session.scalars(select(FimBaselineRow).where(
                FimBaselineRow.root == _clean(root), FimBaselineRow.name == name)).first()
            if row is None:
                return False
            session.delete(row)  # its entries go with it (ON DELETE CASCADE)
            return True

    def _rows(self, session: Session, fingerprints: Sequence[str]) -> dict[str, FindingRow]:
        out: dict[str, FindingRow] = {}
        for chunk in _chunks(fingerprints):
            for row in session.scalars(select(FindingRow).where(FindingRow.fingerprint.in_(chunk))):
                out[row.fingerprint] = row
        return out

    def _seen_by(self, session: Session, scan_id: str) -> set[str]:
        return set(session.scalars(
            select(ScanFindingRow.fingerprint).where(ScanFindingRow.scan_id == scan_id)))

    def _active_rows(self, session: Session) -> Sequence[SuppressionRow]:
        now = self.clock()
        return session.scalars(
            select(SuppressionRow)
            .where(or_(SuppressionRow.expires.is_(None), SuppressionRow.expires > now))
            .order_by(SuppressionRow.id)
        ).all()

    def _active_suppressions(self, session: Session) -> _ActiveSuppressions:
        return _ActiveSuppressions(self._active_rows(session))

    @staticmethod
    def _suppression_rows(session: Session, fingerprint: str | None, rule_id: str | None,
                          target_pattern: str | None) -> Any:
        if fingerprint is not None:
            return session.scalars(select(SuppressionRow).where(SuppressionRow.fingerprint == fingerprint))
        pattern = (SuppressionRow.target_pattern == target_pattern if target_pattern
                   else SuppressionRow.target_pattern.is_(None))
        return session.scalars(select(SuppressionRow).where(SuppressionRow.rule_id == rule_id, pattern))

    @staticmethod
    def _resolve_fingerprint(session: Session, ref: str) -> str:
        prefix = ref.strip().lower()
        if not _HEX.fullmatch(prefix):
            raise UsageError(f"{ref!r} is not a fingerprint (hexadecimal digits, or a prefix of them)")
        matches = session.scalars(
            select(FindingRow.fingerprint).where(FindingRow.fingerprint.startswith(prefix))
            .order_by(FindingRow.fingerprint).limit(6)
        ).all()
        if not matches:
            raise UsageError(f"no finding with fingerprint {prefix}")
        if prefix in matches:
            return prefix
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise UsageError(f"fingerprint prefix {prefix!r} is ambiguous: {shown}; give more digits")
        return matches[0]

    @staticmethod
    def _latest_scan(session: Session) -> ScanRow:
        row = session.scalars(
            select(ScanRow).order_by(ScanRow.started.desc(), ScanRow.recorded.desc()).limit(1)).first()
        if row is None:
            raise UsageError("the findings store holds no scans yet")
        return row

    def _scan(self, session: Session, ref: str) -> ScanRow:
        ref = ref.strip()
        if ref == "latest":
            return self._latest_scan(session)
        row = session.get(ScanRow, ref)
        if row is not None:
            return row
        matches = session.scalars(
            select(ScanRow).where(ScanRow.id.startswith(ref, autoescape=True)).order_by(ScanRow.id).limit(6)
        ).all() if ref else []
        if not matches:
            raise UsageError(f"no scan with id {ref!r}")
        if len(matches) > 1:
            shown = ", ".join(m.id for m in matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise UsageError(f"scan id prefix {ref!r} is ambiguous: {shown}; give more characters")
        return matches[0]

    @staticmethod
    def _previous_scan(session: Session, after: ScanRow) -> ScanRow:
        row = session.scalars(
            select(ScanRow).where(
                ScanRow.kind == after.kind, ScanRow.scope == after.scope, ScanRow.id != after.id,
                ScanRow.status == ScanStatus.COMPLETED.value,
                or_(ScanRow.started < after.started,
                    and_(ScanRow.started == after.started, ScanRow.recorded < after.recorded)),
            ).order_by(ScanRow.started.desc(), ScanRow.recorded.desc()).limit(1)
        ).first()
        if row is None:
            raise UsageError(f"no earlier completed {after.kind} scan of the same targets to compare scan "
                             f"{after.id} with; name one with --from")
        return row

    @staticmethod
    def _later_scan(session: Session, before: ScanRow) -> ScanRow:
        row = session.scalars(
            select(ScanRow).where(
                ScanRow.kind == before.kind, ScanRow.scope == before.scope, ScanRow.id != before.id,
                or_(ScanRow.started > before.started,
                    and_(ScanRow.started == before.started, ScanRow.recorded > before.recorded)),
            ).order_by(ScanRow.started.desc(), ScanRow.recorded.desc()).limit(1)
        ).first()
        if row is None:
            raise UsageError(f"no later {before.kind} scan of the same targets than {before.id}; "
                             "name one with --to")
        return row


def _category(text: str) -> str:
    try:
        return Category(text.strip().lower()).value
    except ValueError:
        choices = ", ".join(c.value for c in Category)
        raise UsageError(f"--category: unknown category {text!r} (choose from {choices})") from None


def _reason(exc: BaseException) -> str:
    """The driver's own message, without SQLAlchemy's statement dump and help link."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return str(exc.orig).strip()
    return str(exc).split("\n(Background on this error")[0].strip()
