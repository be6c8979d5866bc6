import asyncio

import pytest

from cloudward.core.scan import RateLimiter, ScanResult, ScanStatus, bounded_map


def test_bounded_map_limits_concurrency_and_visits_everything():
    seen, peak, active = [], 0, 0

    async def worker(item):
        nonlocal peak, active
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.001)
        seen.append(item)
        active -= 1

    asyncio.run(bounded_map(range(200), worker, concurrency=7))
    assert sorted(seen) == list(range(200))
    assert peak == 7


def test_bounded_map_cancellation_cancels_in_flight():
    started = []

    async def worker(item):
        started.append(item)
        await asyncio.sleep(10)

    async def main():
        task = asyncio.create_task(bounded_map(iter(range(10**9)), worker, concurrency=5))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(started) == 5  # pulled lazily: never more than the concurrency


def test_rate_limiter_spaces_events():
    async def main():
        limiter = RateLimiter(rate=200)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(21):
            await limiter.wait()
        return loop.time() - start

    assert asyncio.run(main()) >= 0.09  # 20 intervals of 5 ms


def test_scan_result_contract_and_errors():
    result = ScanResult(kind="exposure", targets=["127.0.0.1"])
    result.add_error("127.0.0.1:6379", "read timed out", stage="probe")
    result.finish(ScanStatus.CANCELLED)
    doc = result.contract("0.1.0")
    assert doc["schema"] == "cloudward/v1"
    assert doc["scan"]["status"] == "cancelled"
    assert doc["scan"]["errors"] == [{"target": "127.0.0.1:6379", "message": "read timed out", "stage": "probe"}]
    assert result.worst_severity() is None
