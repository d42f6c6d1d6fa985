"""The gateway killed with SIGKILL in the middle of order submissions, then started again on
the same store (the same PostgreSQL, the same Redis).

Just before the kill, the next few orders are held at Alpaca: some accepted with their answer
held (`accept_then_hang`), some held before Alpaca sees them (`hang`), so the kill certainly
leaves orders placed with their answer lost and orders recorded but never placed; the rest of
the in-flight submits die wherever they were. Then, as a careful bot does, the client sends half
of the orders whose answer it lost again under the same Idempotency-Key; the other half are left
to the order sweep alone. Goals: no order Alpaca holds without its row, every row completed
after the sweep (placed ones reconciled, never-sent ones failed as never placed), no order sent
twice (at most one order per client_order_id in Alpaca's book, and no POST that placed nothing,
which is what Alpaca's refusal of a reused client_order_id would leave).
"""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.chaos import orders
from tests.chaos.figures import Result
from tests.chaos.load import Answer, Load, Request, told
from tests.chaos.profile import Profile
from tests.chaos.rig import Rig, sample, scrape

HELD = 2  # orders of each kind held at Alpaca at the moment of the kill (placed, not placed)
FAULT_TAKEN_TIMEOUT_S = 10.0


async def run(rig: Rig, profile: Profile) -> Result:
    await orders.prepare(rig)
    env = rig.gateway_env(**orders.ORDER_SETTINGS)
    first, key = await rig.start_keyed_gateway(env, "gateway-crash-first")
    make = orders.order_requests(uuid.uuid4().hex[:8], key)
    load = Load(
        first.base_url,
        workers=profile.order_workers,
        duration_s=profile.before_s + FAULT_TAKEN_TIMEOUT_S + 5,
        max_requests=profile.max_requests,
    )
    try:
        sending = asyncio.create_task(load.run(make))
        await asyncio.sleep(profile.before_s)
        # Faults take requests in the order they were added: two placed, then two never.
        await rig.control.add_fault("/v2/orders", "accept_then_hang", count=HELD)
        await rig.control.add_fault("/v2/orders", "hang", count=HELD)
        await _until_taken(rig)
        await asyncio.to_thread(first.kill)  # the server and its worker, as a machine dies
        load.stop()
        answers = await sending
    finally:
        await asyncio.to_thread(first.stop)
    await rig.control.clear_faults()  # the held answers go nowhere: their connections are dead
    after_kill = await orders.book(rig)

    lost = [a for a in answers if a.status == 0 and a.key is not None]
    second = await rig.start_gateway(env, "gateway-crash-second")
    try:
        retried = await _retry(second.base_url, make, lost[::2])
        final, settle_s = await orders.settled(rig, every_row=True)
        async with httpx.AsyncClient(timeout=5) as client:
            metrics = await scrape(client, second.base_url)
    finally:
        await asyncio.to_thread(second.stop)

    result = Result("gateway_sigkill")
    result.goal(
        "sent_without_audit",
        final.sent_without_audit,
        why="orders Alpaca holds with no order_audit row",
    )
    result.goal(
        "unsettled_after_sweep",
        final.unsettled_held,
        why="orders Alpaca holds whose audit row is still pending/unknown after the sweep",
    )
    result.goal(
        "pending_rows_after_sweep",
        final.unsettled_rows,
        why="audit rows never settled, whether or not Alpaca holds their order",
    )
    result.goal(
        "max_orders_per_client_order_id",
        final.max_per_client_order_id,
        limit=1,
        why="Alpaca holds two orders for one Idempotency-Key",
    )
    result.goal(
        "orders_sent_twice",
        final.sent_twice(swallowed=HELD),
        why="POSTs to Alpaca that placed nothing: a client_order_id sent again",
    )
    result.goal(
        "told_wrong",
        orders.told_wrong([*answers, *retried], final.held),
        why="2xx for an order Alpaca lacks, or AUDIT_UNAVAILABLE for one it holds",
    )
    swept = {
        outcome: int(sample(metrics, "gateway_order_sweep_rows_total", result=outcome))
        for outcome in ("reconciled", "never_placed", "still_unknown")
    }
    result.figures.update(
        {
            "orders_before_kill": sum(1 for a in answers if a.ok),
            "answers_lost": len(lost),
            "pending_after_kill": after_kill.unsettled_rows,
            "held_after_kill": sum(after_kill.held.values()),
            "retried": len(retried),
            "told_on_retry": told(retried),
            "swept": ",".join(f"{k}:{v}" for k, v in swept.items()),
            "settle_s": "never" if settle_s is None else settle_s,
            "orders_held": sum(final.held.values()),
            "audit": final.statuses(),
        }
    )
    return result


async def _until_taken(rig: Rig) -> None:
    """Until the gateway has sent the orders the faults hold."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FAULT_TAKEN_TIMEOUT_S
    while await rig.control.faults():
        if loop.time() > deadline:
            raise RuntimeError("the gateway sent no order to take the accept_then_hang fault")
        await asyncio.sleep(0.01)


async def _retry(base_url: str, make: orders.RequestMaker, lost: list[Answer]) -> list[Answer]:
    """Each lost order sent again, as it was first sent (same key, same body)."""
    numbers = {a.key: int(str(a.key).rsplit("-", 1)[1]) for a in lost}
    again: list[Request] = [make(n) for n in numbers.values()]
    load = Load(base_url, workers=4, duration_s=30, max_requests=len(again))
    return await load.run(lambda n: again[n])
