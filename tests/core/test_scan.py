from cloudward.core.scan import ScanResult, ScanStatus


def test_scan_result_contract_and_errors():
    result = ScanResult(kind="exposure", targets=["127.0.0.1"])
    result.add_error("127.0.0.1:6379", "read timed out", stage="probe")
    result.finish(ScanStatus.CANCELLED)
    doc = result.contract("0.1.0")
    assert doc["schema"] == "cloudward/v1"
    assert doc["scan"]["status"] == "cancelled"
    assert doc["scan"]["errors"] == [{"target": "127.0.0.1:6379", "message": "read timed out", "stage": "probe"}]
    assert result.worst_severity() is None
