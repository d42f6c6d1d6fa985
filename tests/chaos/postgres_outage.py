"""PostgreSQL stopped (`pg_ctl stop -m immediate`) and started again during continuous orders.

An order is written to the audit before it is sent, so none may reach Alpaca without its row
(goal 0). Orders in flight when the store died reach Alpaca but cannot record the answer; once
the store is back, the order sweep must complete their rows (goal 0 held orders unsettled).
Clients must not be told anything that contradicts Alpaca (goal 0), and what they were told is
counted per status and code.
"""

from __future__ import annotations

import asyncio
import uuid

from tests.chaos import orders
from tests.chaos.figures import Result
from tests.chaos.load import Load, between, p99_ms, told
from tests.chaos.profile import Profile
from tests.chaos.rig import Rig


async def run(rig: Rig, profile: Profile) -> Result:
    await orders.prepare(rig)
    env = rig.gateway_env(**orders.ORDER_SETTINGS)
    gateway, key = await rig.start_keyed_gateway(env, "postgres-restart")
    load = Load(
        gateway.base_url,
        workers=profile.order_workers,
        duration_s=profile.before_s + profile.fault_s + profile.after_s + 30,
        max_requests=profile.max_requests,
    )
    try:
        sending = asyncio.create_task(load.run(orders.order_requests(uuid.uuid4().hex[:8], key)))
        await asyncio.sleep(profile.before_s)
        stopped_at = load.now()
        await rig.stop_postgres()
        await asyncio.sleep(profile.fault_s)
        await rig.restart_postgres()
        back_at = load.now()
        await asyncio.sleep(profile.after_s)
        load.stop()
        answers = await sending
        after, settle_s = await orders.settled(rig, every_row=False)
    finally:
        await asyncio.to_thread(gateway.stop)

    result = Result("postgres_restart")
    result.goal(
        "sent_without_audit",
        after.sent_without_audit,
        why="orders Alpaca holds with no order_audit row",
    )
    result.goal(
        "unsettled_after_sweep",
        after.unsettled_held,
        why="orders Alpaca holds whose audit row is still pending/unknown after the sweep",
    )
    result.goal(
        "orders_sent_twice",
        after.sent_twice(),
        why="POSTs to Alpaca that placed nothing: a client_order_id sent again",
    )
    result.goal(
        "told_wrong",
        orders.told_wrong(answers, after.held),
        why="2xx for an order Alpaca lacks, or AUDIT_UNAVAILABLE for one it holds",
    )
    outage = between(answers, stopped_at, back_at)
    after_back = between(answers, back_at, float("inf"))
    first_ok = min((a.end_s for a in after_back if a.ok), default=None)
    result.figures.update(
        {
            "orders_held": sum(after.held.values()),
            "settle_s": "never" if settle_s is None else settle_s,
            "p99_outage_ms": p99_ms(outage),
            "outage_s": round(back_at - stopped_at, 1),
            "told": told(answers),
            "told_outage": told(outage),
            "told_after": told(after_back),
            "orders_back_s": "never" if first_ok is None else round(first_ok - back_at, 2),
            "audit": after.statuses(),
        }
    )
    return result
