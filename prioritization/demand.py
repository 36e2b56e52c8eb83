"""Which campaigns contractors ask for: the demand side of the empty-queue alert.

The decision log only has answers that handed out a lead, so a campaign that nobody can
be given anything from leaves no trace there. Each web process therefore remembers, in
memory, when each campaign was last asked for (and last answered with nothing) and
writes all of that to :class:`prioritization.models.CampaignDemand` in one small upsert,
at most once per ``MAX_LAG_SECONDS`` per process — never a write per request.

The rules that keep the table honest: the first request ``MAX_LAG_SECONDS`` after this
process's last write writes everything remembered, so the table is never more than that
behind what any process has seen; a campaign this process has never written is written
by the request that asks for it, so a new campaign shows at once. One clock per process,
not one per campaign: per-campaign clocks drift apart and end in a write every few
requests. A failed write is logged and retried by the next request; it never fails the
request that triggered it.
"""

import datetime as dt
import logging
import math
import threading
from collections.abc import Iterable

from django.db import DatabaseError, connection, transaction

logger = logging.getLogger(__name__)

# How far behind the requests the table may be, per campaign and process. The empty-queue
# alert looks at the last DEMAND_WINDOW_SECONDS (prioritization.alerts), ten times this.
MAX_LAG_SECONDS = 30.0

_UNIX_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# Rows are written in campaign order, so two processes flushing at once lock them in the
# same order (no deadlock); campaigns deleted meanwhile are skipped by the join.
_FLUSH_SQL = """
INSERT INTO prioritization_campaigndemand (campaign_id, last_asked_at, last_empty_at)
SELECT v.campaign_id,
       timestamptz 'epoch' + v.asked * interval '1 second',
       timestamptz 'epoch' + v.empty * interval '1 second'
FROM unnest(%(campaigns)s::bigint[], %(asked)s::float8[], %(empty)s::float8[]) AS v(campaign_id, asked, empty)
JOIN leads_campaign c ON c.id = v.campaign_id
ORDER BY v.campaign_id
ON CONFLICT (campaign_id) DO UPDATE
SET last_asked_at = GREATEST(prioritization_campaigndemand.last_asked_at, EXCLUDED.last_asked_at),
    last_empty_at = GREATEST(prioritization_campaigndemand.last_empty_at, EXCLUDED.last_empty_at)
"""


class DemandRecorder:
    """Per-process memory of asked campaigns, written to the database now and then.

    Times are seconds since 1970 (floats): the hot path only stores numbers.
    """

    def __init__(self, *, max_lag_seconds: float = MAX_LAG_SECONDS) -> None:
        self.max_lag_seconds = max_lag_seconds
        self._asked: dict[int, float] = {}  # not yet written: campaign -> last asked
        self._empty: dict[int, float] = {}  # not yet written: campaign -> last empty answer
        self._written: set[int] = set()  # campaigns this process has written
        self._last_write = -math.inf  # when this process last wrote (or tried to)
        # A web server with several threads per worker may record from several threads at once.
        self._lock = threading.Lock()

    def record(self, campaign_ids: Iterable[int], *, empty: bool, at: float) -> bool:
        """Remember that these campaigns were asked for at ``at``; write to the database when
        this process's last write is ``max_lag_seconds`` old or one of them was never
        written. Returns whether it wrote."""
        with self._lock:
            due = at - self._last_write >= self.max_lag_seconds
            for campaign_id in campaign_ids:
                self._asked[campaign_id] = at
                if empty:
                    self._empty[campaign_id] = at
                if campaign_id not in self._written:
                    due = True
        return self.flush(at=at) if due else False

    def flush(self, *, at: float) -> bool:
        """Write every remembered campaign in one statement; on failure keep them for later."""
        with self._lock:
            asked, empty = self._asked, self._empty
            self._asked, self._empty = {}, {}
            # Claimed before the write: a concurrent request must not start a second one.
            self._written.update(asked)
            self._last_write = at
        if not asked:
            return False
        campaigns = sorted(asked)
        try:
            # A savepoint when the caller is inside a transaction: a failure here must not
            # break the caller's transaction.
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    _FLUSH_SQL,
                    {
                        "campaigns": campaigns,
                        "asked": [asked[c] for c in campaigns],
                        "empty": [empty.get(c) for c in campaigns],
                    },
                )
        except DatabaseError:
            logger.warning("Could not record campaign demand; will retry.", exc_info=True)
            with self._lock:
                self._last_write = -math.inf  # the next request tries again
                for campaign_id, when in asked.items():
                    self._asked[campaign_id] = max(when, self._asked.get(campaign_id, when))
                for campaign_id, when in empty.items():
                    self._empty[campaign_id] = max(when, self._empty.get(campaign_id, when))
            return False
        return True

    def forget(self) -> None:
        """Drop everything remembered (tests)."""
        with self._lock:
            self._asked.clear()
            self._empty.clear()
            self._written.clear()
            self._last_write = -math.inf


recorder = DemandRecorder()


def moment(seconds: float) -> dt.datetime:
    """An aware datetime from seconds since 1970."""
    return _UNIX_EPOCH + dt.timedelta(seconds=seconds)
