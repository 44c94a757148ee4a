"""Supplier service handlers: one unit of work each; they decide, routes and consumers translate.

    commands.py   the admin API: suppliers, offers (JSON and CSV), allocations, scorecards
    events.py     consumed events: order-placed is routed, order-cancelled is called off
    callbacks.py  supplier and carrier callbacks, and the reconciler's status checks
    secrets.py    supplier credentials sealed again under the active PII key (rotation)
    dispatch.py   what the dispatcher's supplier calls came to, the SLA clock, housekeeping,
                  supplier availability (circuit breaker) as events

No handler calls a supplier: new supplier orders are committed as `sending` under this
process's lease and handed to its dispatcher (`services.supplier.dispatcher`), which makes
the calls outside any transaction and records their outcome through `dispatch.py`.
"""
