"""Benchmark: 2,000 package queries against a synthetic 50k-advisory OSV database.

Run: .venv/bin/python benchmarks/osv_match.py  (builds the database in a temp dir; no network).
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

from cloudward.engines.osv import Matcher, PackageQuery, update

ADVISORIES = 50_000
PACKAGES = 5_000
QUERIES = 2_000


def main() -> None:
    rnd = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        records = []
        for i in range(ADVISORIES):
            eco = rnd.choice(["Debian:12", "Debian:11", "PyPI", "npm"])
            pkg = f"pkg{rnd.randrange(PACKAGES)}"
            fix = f"{rnd.randrange(1, 9)}.{rnd.randrange(20)}.{rnd.randrange(20)}"
            version = fix + "-1" if eco.startswith("Debian") else fix
            records.append({"id": f"BENCH-{i}", "modified": "2024-01-01T00:00:00Z",
                            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
                            "affected": [{"package": {"ecosystem": eco, "name": pkg},
                                          "ranges": [{"type": "ECOSYSTEM",
                                                      "events": [{"introduced": "0"}, {"fixed": version}]}]}]})
        (src / "all.json").write_text(json.dumps(records))
        db = Path(tmp) / "advisories.db"
        start = time.perf_counter()
        update([str(src)], None, db)
        print(f"load {ADVISORIES} advisories: {time.perf_counter() - start:.2f}s")
        queries = []
        for _ in range(QUERIES):
            eco = rnd.choice(["Debian:12", "PyPI", "npm"])
            version = f"{rnd.randrange(1, 9)}.{rnd.randrange(20)}.{rnd.randrange(20)}"
            version = version + "-1" if eco.startswith("Debian") else version
            queries.append(PackageQuery(eco, f"pkg{rnd.randrange(PACKAGES)}", version))
        matcher = Matcher(db)
        start = time.perf_counter()
        hits = matcher.match(queries)
        print(f"match {QUERIES} queries: {time.perf_counter() - start:.2f}s, {len(hits)} matches")


if __name__ == "__main__":
    main()
