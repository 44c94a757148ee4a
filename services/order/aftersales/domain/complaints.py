"""Complaints: tiers, response and resolution targets, first response and resolution. No I/O."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.order.aftersales.errors import ComplaintClosed
from services.order.domain import Note
from shared.events import (
    ComplaintFiled,
    ComplaintResolved,
    ComplaintResponded,
    ComplaintTier,
    EventData,
)


# -- complaints ------------------------------------------------------------------------
@dataclass(frozen=True)
class ComplaintTargets:
    """Respond within the tier's target; resolve within `resolution`."""

    response: Mapping[ComplaintTier, timedelta]
    resolution: timedelta

    @classmethod
    def default(cls) -> ComplaintTargets:
        return cls(
            {
                ComplaintTier.NORMAL: timedelta(hours=24),
                ComplaintTier.URGENT: timedelta(hours=4),
                ComplaintTier.MAJOR: timedelta(hours=1),
            },
            timedelta(hours=48),
        )


@dataclass(frozen=True)
class ComplaintResponse:
    by: str
    message: str
    at: datetime


@dataclass
class Complaint:
    id: str
    order_id: str
    tier: ComplaintTier
    summary: str
    filed_at: datetime
    respond_by: datetime
    resolve_by: datetime
    responses: list[ComplaintResponse] = field(default_factory=list)
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    events: list[EventData] = field(default_factory=list, repr=False)
    notes: list[Note] = field(default_factory=list, repr=False)

    @property
    def status(self) -> str:
        if self.resolved_at is not None:
            return "resolved"
        return "responded" if self.responses else "open"

    @property
    def responded_at(self) -> datetime | None:
        return self.responses[0].at if self.responses else None

    @property
    def responded_by(self) -> str | None:
        return self.responses[0].by if self.responses else None

    @classmethod
    def file(
        cls,
        order_id: str,
        tier: ComplaintTier,
        summary: str,
        targets: ComplaintTargets,
        now: datetime,
    ) -> Complaint:
        complaint = cls(
            id=f"cmp_{uuid.uuid4().hex}",
            order_id=order_id,
            tier=tier,
            summary=summary,
            filed_at=now,
            respond_by=now + targets.response[tier],
            resolve_by=now + targets.resolution,
        )
        complaint.events.append(
            ComplaintFiled(
                order_id=order_id,
                complaint_id=complaint.id,
                tier=tier,
                respond_by=complaint.respond_by,
                resolve_by=complaint.resolve_by,
                filed_at=now,
            )
        )
        return complaint

    def respond(self, by: str, message: str, now: datetime) -> bool:
        """Record a response; True for the first (`complaint-responded`). Closed: 409."""
        if self.resolved_at is not None:
            raise ComplaintClosed(self.id)
        first = not self.responses
        self.responses.append(ComplaintResponse(by, message, now))
        if first:
            self.events.append(
                ComplaintResponded(
                    order_id=self.order_id,
                    complaint_id=self.id,
                    tier=self.tier,
                    by=by,
                    filed_at=self.filed_at,
                    responded_at=now,
                )
            )
        else:
            self.notes.append(
                Note("complaint-response-recorded", {"complaint_id": self.id, "by": by}, now)
            )
        return first

    def resolve(self, by: str, resolution: str, now: datetime) -> None:
        """Resolve once (`ComplaintClosed` after); an unanswered one is answered by it too."""
        if self.resolved_at is not None:
            raise ComplaintClosed(self.id)
        if not self.responses:
            self.respond(by, resolution, now)
        self.resolved_at, self.resolved_by, self.resolution = now, by, resolution
        self.events.append(
            ComplaintResolved(
                order_id=self.order_id,
                complaint_id=self.id,
                tier=self.tier,
                by=by,
                filed_at=self.filed_at,
                resolved_at=now,
            )
        )
