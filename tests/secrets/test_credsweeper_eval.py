"""Precision / recall of the secrets pipeline against CredSweeper's sample corpus.

Corpus: /work/shared/corpora/credsweeper (CredSweeper's `tests/samples`, MIT licence, see its
LICENSE). The "labels" are `tests/data/output.json`, which is CredSweeper's own REGRESSION OUTPUT
(what that tool reports on its samples, run without its ML filter: `ml_probability` is null) — not
human ground truth. It contains that tool's false positives and misses, and rules we deliberately
do not have (generic "Password" heuristics, UUIDs); the numbers measure agreement with CredSweeper,
and the floors below exist to catch regressions in our engine, not to claim accuracy.

How a label is matched:
* A label is one CredSweeper result (one entry of output.json); its lines are the
  (file, line_num) pairs of its `line_data_list` (a PEM key lists several lines).
* Each of our findings covers (file, line .. end_line) of a top-level sample file, the file
  name taken relative to `tests/samples`.
* A label is *recalled* when any of its lines is covered by any of our findings in the same file;
  a finding is *correct* (precision) when any line it covers is a line of some label in that file.
* Findings inside archive members (`x.zip!member`) are left out: CredSweeper's run did not open
  archives, so they have no labels. Findings are counted once per (file, line span).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from cloudward.secrets.scan import ScanRequest, run_scan

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpora" / "credsweeper"
SAMPLES = CORPUS / "tests" / "samples"
LABELS = CORPUS / "tests" / "data" / "output.json"

# Measured on 2026-11-28 with the engine at that date: precision 0.924 (254/275), recall 0.492
# (284/577). Floors are those minus a small margin, so a real regression fails.
PRECISION_FLOOR = 0.89
RECALL_FLOOR = 0.46

Line = tuple[str, int]


def load_labels() -> list[tuple[str, set[Line]]]:
    results = json.loads(LABELS.read_text(encoding="utf-8"))
    return [
        (item["rule"], {(d["path"].removeprefix("./tests/samples/"), int(d["line_num"]))
                        for d in item["line_data_list"]})
        for item in results
    ]


def our_spans() -> set[tuple[str, int, int]]:
    # A fixed HMAC key: the evaluation must not create an installation key in the user's data dir.
    result = run_scan(ScanRequest(paths=[str(SAMPLES)]), hmac_key=b"credsweeper-eval" * 2)
    prefix = str(SAMPLES) + "/"
    spans = set()
    for finding in result.findings:
        name = finding.target.name.removeprefix(prefix)
        if "!" in name:
            continue
        first = int(finding.location["line"])
        spans.add((name, first, int(finding.location.get("end_line", first))))
    return spans


def test_agreement_with_credsweeper_regression_output() -> None:
    assert LABELS.is_file(), f"the CredSweeper corpus is missing: {LABELS} (../shared must sit beside the checkout)"
    labels = load_labels()
    spans = our_spans()
    labelled: set[Line] = set().union(*(lines for _, lines in labels))
    covered: set[Line] = {(name, n) for name, first, last in spans for n in range(first, last + 1)}

    correct = [s for s in spans if any((s[0], n) in labelled for n in range(s[1], s[2] + 1))]
    recalled = [rule for rule, lines in labels if lines & covered]
    precision = len(correct) / len(spans)
    recall = len(recalled) / len(labels)
    missed = Counter(rule for rule, lines in labels if not lines & covered)
    print(f"\nCredSweeper agreement: precision {precision:.3f} ({len(correct)}/{len(spans)}), "
          f"recall {recall:.3f} ({len(recalled)}/{len(labels)})")
    print("most missed CredSweeper rules:", missed.most_common(10))

    assert precision >= PRECISION_FLOOR
    assert recall >= RECALL_FLOOR
