"""The analyst page in headless chromium: score, compare, a relation's timeline with its absence, labelling."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.browser.conftest import LiveService, screenshot

WARM = (
    "Dear Comrade President, I extend my warmest congratulations on the national day. "
    "Our invincible friendship grows stronger year by year. Our friendship is eternal."
)
COOLER = "Dear Comrade President, I extend my congratulations on the national day. We note the progress of talks."
RELATION = ("Kim Jong Un", "Xi Jinping")
YEARS = [2018, 2019, 2020, 2021, 2022, 2023, 2025]  # no national day message in 2024


@pytest.fixture(scope="module")
def relation(live: LiveService) -> list[dict[str, Any]]:
    """National day messages 2018-2025 from Kim to Xi, 2021 known but unpublished, 2024 missing."""
    messages = [
        {
            "text": None if year == 2021 else f"{WARM if year % 2 else COOLER} ({year})",
            "sender": RELATION[0],
            "recipient": RELATION[1],
            "date": f"{year}-09-09",
            "occasion": "national_day",
        }
        for year in YEARS
    ]
    headers = {"Authorization": f"Bearer {live.key('label')}"}
    response = httpx.post(f"{live.url}/v1/messages", json={"messages": messages}, headers=headers, timeout=60)
    assert response.status_code == 201, response.text
    stored: list[dict[str, Any]] = response.json()["messages"]
    return stored


# JavaScript that finds every visible text whose contrast against its composited background is under WCAG AA.
LOW_CONTRAST = """
() => {
  const rgba = (css) => (css.match(/[\\d.]+/g) || []).map(Number).concat([1]).slice(0, 4);
  const linear = (v) => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  const lum = ([r, g, b]) => 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  const ground = (node) => {
    const layers = [];
    for (let n = node; n && n.nodeType === 1; n = n.parentElement) {
      const c = rgba(getComputedStyle(n).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] === 1) break;
    }
    let out = [255, 255, 255];
    for (const [r, g, b, a] of layers.reverse()) out = [r, g, b].map((v, i) => v * a + out[i] * (1 - a));
    return out;
  };
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let t = walker.nextNode(); t; t = walker.nextNode()) {
    const node = t.parentElement;
    if (!t.textContent.trim() || !node || node.closest("svg") || !node.getClientRects().length) continue;
    const style = getComputedStyle(node);
    if (style.visibility === "hidden" || node.closest("[hidden]")) continue;
    const [l1, l2] = [lum(rgba(style.color)), lum(ground(node))].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const large = parseFloat(style.fontSize) >= 24 || (parseFloat(style.fontSize) >= 18.66 && +style.fontWeight >= 700);
    if (ratio < (large ? 3 : 4.5)) bad.push(`${t.textContent.trim().slice(0, 40)}: ${ratio.toFixed(2)}`);
  }
  return bad;
}
"""


def test_score_shades_the_sentences_and_underlines_the_markers(page: Any) -> None:
    page.goto("/")
    page.get_by_role("textbox", name="Message", exact=True).fill(WARM)
    page.get_by_role("button", name="Score", exact=True).click()

    page.locator("#score-result .sentence").first.wait_for()
    sentences = page.locator("#score-result .sentence")
    markers = page.locator("#score-result mark.marker")
    kinds = markers.evaluate_all("marks => marks.map(m => [m.textContent, m.dataset.kind])")
    shaded = sentences.evaluate_all("spans => spans.filter(s => s.style.backgroundColor).length")
    screenshot(page, "score")

    assert sentences.count() == 3
    assert shaded >= 1
    assert ["warmest", "superlative"] in kinds and ["friendship", "friendship"] in kinds
    assert page.get_by_role("img", name="score").count() == 1  # the bar, read out with its interval
    assert "90% interval" in page.locator("#score-result .headline").inner_text()
    assert "null" not in page.locator("#score-result").inner_text()
    assert page.locator("#score-result .legend").inner_text().count("sentence") == 2
    assert page.evaluate(LOW_CONTRAST) == []


def test_keyboard_alone_scores_and_reaches_every_view(page: Any) -> None:
    page.goto("/")
    page.get_by_role("textbox", name="Message", exact=True).focus()
    page.keyboard.type("Dear friend, warmest congratulations.")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.locator("#score-result .score-value").wait_for()

    page.get_by_role("tab", name="Score a message").focus()
    page.keyboard.press("ArrowRight")
    compare_selected = page.get_by_role("tab", name="Compare two").get_attribute("aria-selected")
    page.keyboard.press("ArrowRight")

    assert compare_selected == "true"
    assert page.get_by_role("tab", name="A relation over time").get_attribute("aria-selected") == "true"
    assert page.locator("#view-timeline").is_visible() and not page.locator("#view-score").is_visible()
    unlabelled = page.evaluate(
        "() => [...document.querySelectorAll('input, select, textarea')].filter(c => !c.labels.length).map(c => c.id)"
    )
    assert unlabelled == []


def test_an_api_error_shows_its_detail_not_a_blank_page(page: Any) -> None:
    page.goto("/")
    page.get_by_role("textbox", name="Message", exact=True).fill("   ")
    page.get_by_role("button", name="Score", exact=True).click()

    alert = page.locator("#score-error")
    alert.wait_for()

    assert "Invalid request" in alert.inner_text()
    assert "text must contain words; found only whitespace" in alert.inner_text()


def test_compare_highlights_the_sentence_that_did_not_appear(page: Any) -> None:
    page.goto("/")
    page.get_by_role("tab", name="Compare two").click()
    page.get_by_label("A: the earlier").fill(WARM)
    page.get_by_label("B: the later").fill(COOLER)
    page.get_by_role("button", name="Compare", exact=True).click()

    page.locator("#compare-result .figures").wait_for()
    dropped = page.locator("#compare-result .sentence.dropped")
    fresh = page.locator("#compare-result .sentence.new")
    figures = page.locator("#compare-result .figures").inner_text()
    screenshot(page, "compare")

    assert "Our friendship is eternal." in dropped.all_inner_texts()
    assert "We note the progress of talks." in fresh.all_inner_texts()
    assert "P(B warmer than A)" in figures and "B − A" in figures
    assert page.locator("#compare-result table").inner_text().count("friendship") >= 1
    assert page.evaluate(LOW_CONTRAST) == []


def _use_key(page: Any, token: str) -> None:
    page.get_by_label("API key").fill(token)
    page.get_by_role("button", name="Use key").click()


def _open_relation(page: Any, live: LiveService, scope: str = "read") -> None:
    """Reading stored messages needs a ``read`` key (the service's default): the analyst gives one first."""
    page.goto("/")
    _use_key(page, live.key(scope))
    page.get_by_role("tab", name="A relation over time").click()
    page.get_by_label("Relation (sender → recipient)").select_option(
        label=f"{RELATION[0]} → {RELATION[1]} (7, 2018–2025)"
    )
    page.get_by_label("Absences judged up to").fill("2026-01-15")
    page.get_by_role("button", name="Show timeline").click()
    page.locator("#timeline-result svg.chart").wait_for()


def test_without_a_key_the_relations_ask_for_a_read_key_and_load_once_it_is_given(
    page: Any, live: LiveService, relation: list[dict[str, Any]]
) -> None:
    page.goto("/")
    page.get_by_role("tab", name="A relation over time").click()
    error = page.locator("#timeline-error")
    error.wait_for()
    refused = error.inner_text()

    _use_key(page, live.key("read"))
    option = f"{RELATION[0]} → {RELATION[1]} (7, 2018–2025)"
    page.locator("#relation option", has_text=option).wait_for(state="attached")

    assert "API key missing" in refused and "scope 'read'" in refused
    assert error.is_hidden()


def test_timeline_marks_the_missing_year_on_the_chart(
    page: Any, live: LiveService, relation: list[dict[str, Any]]
) -> None:
    _open_relation(page, live)

    absence = page.locator("svg.chart g.absence.expected_occasion")
    listed = page.locator("#timeline-result .absences").inner_text()
    points = page.locator("svg.chart g.point")
    screenshot(page, "timeline")

    assert absence.count() == 1
    assert absence.locator("text").text_content() == "no national_day 2024"
    assert "no national_day message in 2024 after 6 years in a row" in listed
    assert points.count() == 7
    assert page.locator("svg.chart g.point.unpublished").count() == 1


def test_a_point_opens_its_message(page: Any, live: LiveService, relation: list[dict[str, Any]]) -> None:
    _open_relation(page, live)
    first = relation[0]

    page.locator(f'svg.chart g.point[data-id="{first["id"]}"]').focus()
    page.keyboard.press("Enter")
    page.locator("#message-body .text").wait_for()

    assert page.locator("#message-panel .text").inner_text() == first["text"]
    assert page.evaluate("document.activeElement.id") == "message-title"


def test_label_with_a_read_key_shows_the_error_then_with_a_label_key_it_is_saved(
    page: Any, live: LiveService, relation: list[dict[str, Any]]
) -> None:
    _open_relation(page, live, scope="read")
    target = relation[1]
    page.locator(f'svg.chart g.point[data-id="{target["id"]}"]').click()
    page.get_by_label("Annotator").fill("analyst-7")
    page.get_by_label("Your score (0–100)").fill("72.5")

    page.get_by_role("button", name="Save label").click()
    error = page.locator("#label-error")
    error.wait_for()
    refused = error.inner_text()
    screenshot(page, "label-without-key")

    token = live.key("label")
    _use_key(page, token)
    page.get_by_role("button", name="Save label").click()
    page.locator("#label-done").wait_for()
    screenshot(page, "label-with-key")

    assert "scope 'label'" in refused
    assert "Saved: analyst-7 scored message" in page.locator("#label-done").inner_text()
    assert page.evaluate("sessionStorage.getItem('diplotone.apiKey')") == token
    assert token not in page.url and page.get_by_label("API key").input_value() == ""
    headers = {"Authorization": f"Bearer {token}"}
    stored = httpx.get(f"{live.url}/v1/messages/{target['id']}", headers=headers).json()
    assert stored["labels"][0]["annotator"] == "analyst-7" and stored["label"] == 72.5


def test_page_files_come_from_the_service_only(live: LiveService) -> None:
    page = httpx.get(f"{live.url}/")
    script = httpx.get(f"{live.url}/static/app.js")
    missing = httpx.get(f"{live.url}/static/..%2Fapp.py")

    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert script.headers["content-type"].startswith("text/javascript")
    assert missing.status_code == 404
    assert "http://" not in page.text and "https://" not in page.text
