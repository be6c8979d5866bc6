"""The SQLi rule on English technical prose: sentences of the Python standard library's docstrings
(doctest paragraphs left out), each judged as a search query. These sentences quote words, name
functions and say `or`, `and`, `select` and `is None` all the time, so they are where a loose SQLi
pattern shows first. The share of sentences flagged may only go down: CEILING of SENTENCES is what was
measured when this test was written (Python 3.11.7's standard library: another Python's stdlib is held
to the same share); lower it when a change lowers it."""

from __future__ import annotations

import ast
import re
import sysconfig
from pathlib import Path
from urllib.parse import quote

from tests.appsec.conftest import Judge

CEILING, SENTENCES = 139, 8741  # 171 of them before the PL1 work of issue #9
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`'\"(])")


def stdlib_sentences() -> list[str]:
    """Distinct sentences of 20 to 300 characters from the docstrings of the top-level stdlib modules."""
    out: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node)
            for paragraph in re.split(r"\n\s*\n", doc or ""):
                if ">>>" in paragraph:
                    continue
                for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
                    if 20 <= len(sentence) <= 300:
                        out.append(sentence)
    return list(dict.fromkeys(out))


def test_stdlib_docstring_sentences_are_not_sqli(judge: Judge) -> None:
    sentences = stdlib_sentences()
    assert len(sentences) > 5000  # the corpus is really there
    flagged = [s for s in sentences if any(rule == "appsec.sqli" for rule, _ in judge("q=" + quote(s, safe="")))]
    assert len(flagged) <= CEILING * len(sentences) // SENTENCES, flagged[:20]
