import pytest

from cloudward.core.severity import Severity


def test_order_is_by_rank_not_alphabet():
    assert Severity.CRITICAL > Severity.HIGH > Severity.MEDIUM > Severity.LOW > Severity.INFO
    # alphabetically "high" < "info"; by rank it is the other way round
    assert Severity.HIGH >= Severity.INFO
    assert not Severity.INFO >= Severity.HIGH
    assert sorted([Severity.LOW, Severity.CRITICAL, Severity.INFO]) == [
        Severity.INFO, Severity.LOW, Severity.CRITICAL]
    assert max(Severity) is Severity.CRITICAL


def test_parse():
    assert Severity.parse(" High ") is Severity.HIGH
    with pytest.raises(ValueError, match="unknown severity"):
        Severity.parse("severe")
