"""The absences of a relation on small composed histories: expected occasions, long silences, and no false alarms."""

from __future__ import annotations

import datetime as dt

from service.cadence import Entry, cadence, duration, occasion_key

D = dt.date


def _yearly(occasion: str, years: range, month: int = 9, day: int = 9) -> list[Entry]:
    return [Entry(D(year, month, day), occasion) for year in years]


def test_missing_year_after_a_run_is_an_expected_message_that_did_not_come() -> None:
    history = _yearly("National Day", range(2018, 2024)) + _yearly("National Day", range(2025, 2026))

    found = cadence(history, as_of=D(2026, 1, 15))

    missing = [a for a in found.absences if a.kind == "expected_occasion"]
    assert [(a.occasion, a.year, a.start) for a in missing] == [("national_day", 2024, D(2024, 9, 9))]
    assert missing[0].detail == "no national_day message in 2024 after 6 years in a row"
    assert [(o.occasion, o.usual_date) for o in found.occasions] == [("national_day", "09-09")]


def test_every_year_missing_after_the_run_is_flagged_until_the_occasion_returns() -> None:
    history = _yearly("new_year", range(2015, 2019), 1, 1) + _yearly("new_year", range(2021, 2023), 1, 1)

    found = cadence(history, as_of=D(2023, 6, 1))

    details = [a.detail for a in found.absences if a.kind == "expected_occasion"]
    assert details == [
        "no new_year message in 2019 after 4 years in a row",
        "no new_year message in 2020 (none since 2018) after 4 years in a row",
    ]  # 2023 is missing too, but after a run of only 2 years: not expected


def test_this_years_occasion_is_expected_only_once_its_usual_date_is_well_past() -> None:
    history = _yearly("national_day", range(2021, 2025))  # 9 September, 2021-2024

    not_due = cadence(history, as_of=D(2025, 9, 20))  # 11 days after: could still come
    due = cadence(history, as_of=D(2025, 10, 20))

    assert [a for a in not_due.absences if a.kind == "expected_occasion"] == []
    assert [a.year for a in due.absences if a.kind == "expected_occasion"] == [2025]


def test_an_unpublished_message_counts_as_the_occasion_coming() -> None:
    # The 2024 entry stands for a message the agency named without printing it: cadence sees only date and occasion.
    history = _yearly("national_day", range(2018, 2026))

    found = cadence(history, as_of=D(2026, 1, 1))

    assert [a for a in found.absences if a.kind == "expected_occasion"] == []


def test_an_occasion_seen_in_fewer_than_three_years_is_never_expected() -> None:
    history = [*_yearly("birthday", range(2022, 2024)), Entry(D(2025, 3, 1), "anniversary")]

    found = cadence(history, as_of=D(2026, 12, 31))

    assert found.occasions == []
    assert found.absences == []


def test_occasion_every_other_year_is_recurring_but_never_a_missed_run() -> None:
    history = _yearly("anniversary", range(2014, 2025, 2))

    found = cadence(history, as_of=D(2025, 12, 31))

    assert [o.occasion for o in found.occasions] == ["anniversary"]
    assert [a for a in found.absences if a.kind == "expected_occasion"] == []


def test_a_gap_three_times_the_usual_one_is_a_silence_longer_than_usual() -> None:
    every_two_months = [D(2023, month, 1) for month in range(1, 12, 2)]  # Jan ... Nov 2023
    history = [Entry(day) for day in [*every_two_months, D(2024, 7, 1), D(2024, 9, 1)]]

    found = cadence(history, as_of=D(2024, 10, 1))

    assert found.usual_gap_days == 61.0
    silences = [a for a in found.absences if a.kind == "long_silence"]
    assert [(a.start, a.end, a.ongoing) for a in silences] == [(D(2023, 11, 1), D(2024, 7, 1), False)]
    assert silences[0].detail == "first message in 8 months; usual gap 2 months"


def test_a_gap_under_three_usual_gaps_is_no_silence() -> None:
    every_two_months = [D(2023, month, 1) for month in range(1, 12, 2)]
    history = [Entry(day) for day in [*every_two_months, D(2024, 4, 1)]]  # 152 days: 2.5 usual gaps

    found = cadence(history, as_of=D(2024, 5, 1))

    assert found.absences == []


def test_a_silence_lasting_to_as_of_is_flagged_as_ongoing() -> None:
    history = [Entry(D(2023, month, 1)) for month in range(1, 12, 2)]

    found = cadence(history, as_of=D(2024, 9, 1))

    (silence,) = found.absences
    assert (silence.start, silence.end, silence.ongoing) == (D(2023, 11, 1), D(2024, 9, 1), True)
    assert silence.detail == "no message in 10 months since 2023-11-01; usual gap 2 months"


def test_a_relation_too_short_has_no_usual_gap_and_no_alarm() -> None:
    history = [Entry(D(2020, 1, 1), "national_day"), Entry(D(2021, 1, 1), "national_day"), Entry(D(2025, 6, 1))]

    found = cadence(history, as_of=D(2026, 6, 1))

    assert (found.usual_gap_days, found.gaps) == (None, 2)
    assert found.absences == []


def test_weekly_relation_pausing_three_weeks_is_not_a_silence() -> None:
    history = [Entry(D(2024, 1, 1) + dt.timedelta(weeks=week)) for week in range(10)]
    history.append(Entry(history[-1].date + dt.timedelta(weeks=3)))

    found = cadence(history, as_of=history[-1].date)

    assert found.usual_gap_days == 7.0
    assert found.absences == []  # 21 days is three usual gaps but under the 60-day floor


def test_messages_after_as_of_and_same_day_duplicates_do_not_count() -> None:
    days = [D(2024, m, 1) for m in (1, 3, 5, 7, 9)]
    history = [Entry(day) for day in days] + [Entry(D(2024, 9, 1)), Entry(D(2030, 1, 1))]

    found = cadence(history, as_of=D(2024, 10, 1))

    assert found.gaps == 4
    assert found.absences == []


def test_occasion_names_and_durations_read_as_an_analyst_writes_them() -> None:
    assert occasion_key(" National  Day ") == occasion_key("national-day") == "national_day"
    assert occasion_key("  ") is None
    assert [duration(d) for d in (1, 12, 61, 243, 900)] == ["1 day", "12 days", "2 months", "8 months", "2.5 years"]
