"""Fault points (magistrate/faults.py) hold a real run where a test names, whatever the
pace of the steps judged side by side."""

from __future__ import annotations

import asyncio

from magistrate import faults


def test_the_kth_step_holds_only_once_the_steps_before_it_have_passed(tmp_path, monkeypatch):
    """Units publish side by side: the third can reach the point while the first two are
    still publishing. It must hold only once they have, so a kill then finds two."""
    monkeypatch.setenv("MAGISTRATE_FAULT", "publish=3")
    monkeypatch.setenv("MAGISTRATE_FAULT_DIR", str(tmp_path))
    monkeypatch.setattr(faults, "_counts", {})
    monkeypatch.setattr(faults, "_passed", {})
    published: list[int] = []
    seen_at_hold: list[int] = []

    async def unit(number: int, publishing: float):
        async with faults.step_async("publish"):
            await asyncio.sleep(publishing)
            published.append(number)

    async def test_driver():
        reached = tmp_path / "publish-3.reached"
        while not reached.exists():
            await asyncio.sleep(0.01)
        seen_at_hold.append(len(published))
        (tmp_path / "publish-3.go").touch()

    async def main():
        # The first two take a while to publish; the third arrives at once behind them.
        await asyncio.gather(unit(1, 0.5), unit(2, 0.6), test_driver(), _later(unit(3, 0.0), 0.05))

    async def _later(coro, delay):
        await asyncio.sleep(delay)
        await coro

    asyncio.run(main())
    assert seen_at_hold == [2]
    assert sorted(published) == [1, 2, 3]
    assert (tmp_path / "publish-3.reached").read_text().strip().isdigit()


def test_an_unarmed_step_is_free(monkeypatch):
    monkeypatch.delenv("MAGISTRATE_FAULT", raising=False)
    monkeypatch.setattr(faults, "_passed", {})
    ran = []

    async def main():
        async with faults.step_async("publish"):
            ran.append(1)

    asyncio.run(main())
    assert ran == [1] and faults._passed == {}
