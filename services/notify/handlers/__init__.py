"""Notify handlers, one unit of work each: `events` (consumed events), `alerts` (alert rules
and escalation), `commands` and `queries` (what the HTTP API asks for)."""
