"""A relation's cadence and the signals that are absences: expected messages that did not come, long silences.

The rules (the README states them for analysts):

- Every dated message counts, published or not (an agency naming a message it did not print is still a message).
  Undated messages are left out. Occasions are compared case- and spacing-insensitively ("National Day" is
  "national_day").
- An occasion is **recurring** when messages for it were seen in at least ``RECURRING_YEARS`` distinct calendar
  years; its usual date is the median day of the year of those messages.
- A year is **expected** for an occasion when the occasion came in each of the ``RECURRING_YEARS`` years just
  before it; if no message for it came that year, the absence is flagged ("no national_day message in 2024 after 6
  years in a row"). Following missing years are flagged too, each naming the run that ended, until the occasion
  comes again. The current year (``as_of``) is expected only once its usual date is ``GRACE_DAYS`` past.
- The **usual gap** is the median number of days between consecutive dated messages (a day with several counts
  once); it is stated once a relation has at least ``MIN_GAPS`` gaps.
- A gap is a **silence longer than usual** when it is at least ``SILENCE_RATIO`` times the usual gap and at least
  ``MIN_SILENCE_DAYS`` long; the gap since the last message up to ``as_of`` is judged the same way (ongoing).

So a relation too short to have a usual gap or a three-year run flags nothing.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

RECURRING_YEARS = 3  # years an occasion must be seen in, and years in a row before one is expected
GRACE_DAYS = 30  # an occasion this year is expected only once its usual date is this far behind
MIN_GAPS = 4  # gaps between messages before a usual gap is stated (5 dated messages)
SILENCE_RATIO = 3.0  # a silence is this many usual gaps or more
MIN_SILENCE_DAYS = 60  # and never shorter than this: a relation that writes weekly does not alarm at 3 weeks


@dataclass(frozen=True)
class Entry:
    """What cadence needs of a stored message."""

    date: dt.date
    occasion: str | None = None


@dataclass(frozen=True)
class RecurringOccasion:
    occasion: str
    years: list[int]
    usual_date: str  # MM-DD, the median day of the year of its messages


@dataclass(frozen=True)
class Absence:
    kind: Literal["expected_occasion", "long_silence"]
    start: dt.date  # the expected occasion's usual date that year; a silence: the last message before it
    end: dt.date  # the same date for an occasion; a silence: the message that ended it, or as_of if ongoing
    detail: str
    occasion: str | None = None
    year: int | None = None
    ongoing: bool = False


@dataclass(frozen=True)
class Cadence:
    usual_gap_days: float | None
    gaps: int
    occasions: list[RecurringOccasion]
    absences: list[Absence]


def occasion_key(occasion: str | None) -> str | None:
    """``"National Day "`` → ``"national_day"``; ``None`` or blank → ``None``."""
    if occasion is None or not occasion.strip():
        return None
    return re.sub(r"[\s_\-]+", "_", occasion.strip().lower())


def cadence(entries: Iterable[Entry], as_of: dt.date) -> Cadence:
    """The relation's usual gap, its recurring occasions and its absences up to ``as_of``, oldest first."""
    dated = sorted((e for e in entries if e.date <= as_of), key=lambda e: e.date)
    occasions, occasion_absences = _occasions(dated, as_of)
    usual, gaps, silences = _silences(sorted({e.date for e in dated}), as_of)
    absences = sorted(occasion_absences + silences, key=lambda a: (a.start, a.kind))
    return Cadence(usual, gaps, occasions, absences)


# ---------------------------------------------------------------------------------------------------------- occasions


def _occasions(entries: list[Entry], as_of: dt.date) -> tuple[list[RecurringOccasion], list[Absence]]:
    by_occasion: dict[str, list[dt.date]] = {}
    for entry in entries:
        key = occasion_key(entry.occasion)
        if key is not None:
            by_occasion.setdefault(key, []).append(entry.date)
    recurring, absences = [], []
    for occasion, dates in sorted(by_occasion.items()):
        years = sorted({d.year for d in dates})
        if len(years) < RECURRING_YEARS:
            continue
        day_of_year = round(statistics.median(d.timetuple().tm_yday for d in dates))
        usual = dt.date(2001, 1, 1) + dt.timedelta(days=day_of_year - 1)  # a non-leap year names the day
        recurring.append(RecurringOccasion(occasion, years, f"{usual:%m-%d}"))
        absences += _missing_years(occasion, set(years), usual, as_of)
    return recurring, absences


def _missing_years(occasion: str, years: set[int], usual: dt.date, as_of: dt.date) -> list[Absence]:
    """Each year with no message for ``occasion`` that follows a run of ``RECURRING_YEARS`` years with one."""
    absences: list[Absence] = []
    run, ended_run, last_seen = 0, 0, 0
    for year in range(min(years), as_of.year + 1):
        if year in years:
            run, ended_run, last_seen = run + 1, 0, year
            continue
        expected_on = _in_year(usual, year)
        if year == as_of.year and (as_of - expected_on).days < GRACE_DAYS:
            break  # not due yet
        if run:
            ended_run, run = run, 0  # this year ends the run
        if ended_run >= RECURRING_YEARS:
            since = "" if year == last_seen + 1 else f" (none since {last_seen})"
            detail = f"no {occasion} message in {year}{since} after {ended_run} years in a row"
            absences.append(Absence("expected_occasion", expected_on, expected_on, detail, occasion, year))
    return absences


def _in_year(usual: dt.date, year: int) -> dt.date:
    try:
        return usual.replace(year=year)
    except ValueError:  # 29 February in a common year
        return dt.date(year, 2, 28)


# ---------------------------------------------------------------------------------------------------------- silences


def _silences(dates: list[dt.date], as_of: dt.date) -> tuple[float | None, int, list[Absence]]:
    gaps = [(later - earlier).days for earlier, later in itertools.pairwise(dates)]
    if len(gaps) < MIN_GAPS:
        return None, len(gaps), []
    usual = float(statistics.median(gaps))
    threshold = max(SILENCE_RATIO * usual, MIN_SILENCE_DAYS)
    absences = [
        Absence(
            "long_silence",
            earlier,
            later,
            f"first message in {duration(gap)}; usual gap {duration(usual)}",
        )
        for earlier, later, gap in zip(dates, dates[1:], gaps, strict=False)
        if gap >= threshold
    ]
    since_last = (as_of - dates[-1]).days
    if since_last >= threshold:
        detail = f"no message in {duration(since_last)} since {dates[-1].isoformat()}; usual gap {duration(usual)}"
        absences.append(Absence("long_silence", dates[-1], as_of, detail, ongoing=True))
    return usual, len(gaps), absences


def duration(days: float) -> str:
    """Days as an analyst says them: ``"12 days"``, ``"8 months"``, ``"2.5 years"``."""
    if days < 60:
        return f"{round(days)} day{'s' if round(days) != 1 else ''}"
    months = days / DAYS_PER_MONTH
    if months < 24:
        return f"{round(months)} months"
    return f"{months / 12:.1f} years"


DAYS_PER_MONTH = 365.25 / 12
