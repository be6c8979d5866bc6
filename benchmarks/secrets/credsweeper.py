"""Agreement with CredSweeper's labelled samples, for cloudward and each peer, with one matching rule.

Corpus: ../shared/corpora/credsweeper (CredSweeper's `tests/samples`, MIT licence). The labels are
`tests/data/output.json`: CredSweeper's own regression output (its rules, run without its ML filter),
not human ground truth, so the figures measure agreement with CredSweeper; they include its false
positives and its generic "password"/"UUID" heuristics. The matching is the one of
tests/secrets/test_credsweeper_eval.py, applied to every tool alike:

* a label is recalled when any of its (file, line) pairs is covered by a finding of the tool
  (a finding covers file, first line .. last line; tools that give one line cover one line);
* a finding is correct when any line it covers is a line of some label; findings are counted once
  per distinct (file, first, last) span; findings inside archive members (`x.zip!member`, cloudward
  only) are left out, since CredSweeper's run did not open archives.

    python benchmarks/secrets/credsweeper.py [--peers .venv-peers/bin] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ROOT, machine, today, write_section
from run import Result, Span, peer_tools, runner_table, versions_line

CORPUS = ROOT.parent / "shared" / "corpora" / "credsweeper"
SAMPLES = CORPUS / "tests" / "samples"
LABELS = CORPUS / "tests" / "data" / "output.json"

Line = tuple[str, int]


def load_labels() -> list[tuple[str, set[Line]]]:
    results = json.loads(LABELS.read_text(encoding="utf-8"))
    return [(item["rule"], {(d["path"].removeprefix("./tests/samples/"), int(d["line_num"]))
                            for d in item["line_data_list"]}) for item in results]


def agreement(spans: set[Span], labels: list[tuple[str, set[Line]]]) -> tuple[int, int, int, int, Counter[str]]:
    """(correct, findings, recalled, labels, missed rules) under the matching described above."""
    spans = {s for s in spans if "!" not in s[0]}
    labelled: set[Line] = set().union(*(lines for _, lines in labels))
    covered = {(name, n) for name, first, last in spans for n in range(first, last + 1)}
    correct = sum(1 for name, first, last in spans if any((name, n) in labelled for n in range(first, last + 1)))
    recalled = sum(1 for _, lines in labels if lines & covered)
    missed = Counter(rule for rule, lines in labels if not lines & covered)
    return correct, len(spans), recalled, len(labels), missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=Path, default=ROOT / ".venv-peers" / "bin", help="bin dir of peer tools")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not LABELS.is_file():
        raise SystemExit(f"the CredSweeper corpus is missing: {LABELS}")

    labels = load_labels()
    tools = peer_tools(args.peers)
    work = Path(tempfile.mkdtemp(prefix="cloudward-credsweeper-bench-"))
    # A copy named `samples`, so that every tool sees the same relative names and nothing is written
    # next to the shared corpus.
    samples = work / "samples"
    shutil.copytree(SAMPLES, samples, symlinks=True)
    out = work / "out"
    out.mkdir()
    results: dict[str, Result] = {name: run(samples) for name, run in runner_table(tools, out).items()}

    rows = []
    for name, result in results.items():
        correct, found, recalled, total, missed = agreement(result.spans, labels)
        precision = correct / found if found else 0.0
        recall = recalled / total if total else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        top = ", ".join(f"{rule} ({n})" for rule, n in missed.most_common(4))
        rows.append(f"| {name} | {precision:.3f} ({correct}/{found}) | {recall:.3f} ({recalled}/{total}) | "
                    f"{f1:.3f} | {result.seconds:.1f} s | {top} |")
        print(rows[-1], file=sys.stderr)
    files = sum(1 for p in samples.rglob("*") if p.is_file())
    body = "\n".join([
        f"## Secret scan: agreement with the CredSweeper corpus ({today()})",
        "",
        f"Machine: {machine()}. `python benchmarks/secrets/credsweeper.py`. Versions: {versions_line(tools)}.",
        "",
        f"Input: CredSweeper's `tests/samples` ({files} files, `../shared/corpora/credsweeper`, MIT). Labels: "
        f"its `tests/data/output.json`, {len(labels)} results: **CredSweeper's own regression output** "
        "(its rules, without its ML filter), not human ground truth. It includes CredSweeper's false "
        "positives and rule families the other tools do not have (generic passwords in code, UUIDs, "
        "`key = value` heuristics), so every tool's recall here is bounded well below 1 and \"precision\" "
        "is agreement with CredSweeper, not verified truth.",
        "",
        "Matching (the same for every tool, as in `tests/secrets/test_credsweeper_eval.py`): a label is "
        "recalled when one of its lines is covered by a finding in the same file; a finding (one per "
        "distinct file and line span) is correct when one of its lines is a labelled line; cloudward's "
        "findings inside archive members are left out (CredSweeper did not open archives). Same commands "
        "as the tree benchmark above.",
        "",
        "| tool | precision | recall | F1 | wall clock | most missed CredSweeper rules (labels) |",
        "|---|---:|---:|---:|---:|---|",
        *rows,
    ])
    print(body)
    if not args.no_write:
        write_section("secrets-credsweeper", body)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
