// The analyst page: tabs, the key for this tab, and the three views (score, compare, a relation over time).
import { api, clearError, keepKey, savedKey, showError } from "./api.js";
import { chartLegend, timelineChart } from "./chart.js";
import { el, headline, legend, scoreBar, sentenceTable, shadedText, unusualNotice } from "./render.js";

const $ = (id) => document.getElementById(id);
const fill = (box, ...nodes) => box.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));

// ------------------------------------------------------------------------------------------------------------ tabs
function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab, focus = true) => {
    for (const other of tabs) {
      const on = other === tab;
      other.setAttribute("aria-selected", String(on));
      other.tabIndex = on ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    if (tab.id === "tab-timeline") loadRelations();
  };
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) select(tabs[(index + step + tabs.length) % tabs.length]);
      if (event.key === "Home") select(tabs[0]);
      if (event.key === "End") select(tabs[tabs.length - 1]);
    });
  });
}

// ------------------------------------------------------------------------------------------------------------- key
function setupKey() {
  const input = $("api-key"), state = $("key-state");
  const show = () => {
    const key = savedKey();
    state.textContent = key
      ? `Key ${key.slice(0, 12)}… kept for this tab.`
      : "No key: scoring only. Stored messages need a key with scope read (or above) unless the service opens reads.";
  };
  // A new key may open what the last one could not: load the relations again when their tab is shown.
  const changed = () => {
    relationsLoaded = false;
    if (!$("view-timeline").hidden) loadRelations();
    show();
  };
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    keepKey(input.value.trim());
    input.value = "";
    changed();
  });
  $("key-forget").addEventListener("click", () => { keepKey(""); changed(); });
  show();
}

// Run `work` with the form's button disabled, its errors shown in `errorBox`.
async function busy(form, errorBox, work) {
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  clearError(errorBox);
  try {
    await work();
  } catch (error) {
    showError(errorBox, error);
  } finally {
    button.disabled = false;
  }
}

// ----------------------------------------------------------------------------------------------------------- score
function setupScore() {
  const form = $("score-form"), out = $("score-result");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, $("score-error"), async () => {
      const text = $("score-text").value;
      const result = await api("/v1/score", { method: "POST", body: { text } });
      fill(out,
        el("h2", { text: "Result" }), headline(result), scoreBar(result), unusualNotice(result),
        legend(), shadedText(text, result), sentenceTable(result),
      );
      out.hidden = false;
    });
  });
}

// --------------------------------------------------------------------------------------------------------- compare
function setupCompare() {
  const form = $("compare-form"), out = $("compare-result");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, $("compare-error"), async () => {
      const a = $("compare-a").value, b = $("compare-b").value;
      const c = await api("/v1/compare", { method: "POST", body: { a, b } });
      const dropped = new Map(c.explanation.only_in_a.map((s) => [`${s.start}:${s.end}`, { cls: "dropped", label: "did not appear this time" }]));
      const fresh = new Map(c.explanation.only_in_b.map((s) => [`${s.start}:${s.end}`, { cls: "new", label: "new this time" }]));
      const sign = c.delta > 0 ? "+" : "";
      const changed = c.explanation.markers.filter((m) => m.a || m.b);
      fill(out,
        el("h2", { text: "Comparison" }),
        el("div", { class: "figures" },
          figure("B − A", `${sign}${c.delta.toFixed(1)}`),
          figure("P(B warmer than A)", c.p_b_warmer.toFixed(2)),
          figure("A", `${c.a.score.toFixed(1)} ${c.a.band}`),
          figure("B", `${c.b.score.toFixed(1)} ${c.b.band}`)),
        el("ul", { class: "summary" }, ...c.explanation.summary.map((line) => el("li", { text: line }))),
        el("table", { class: "sentences-table" },
          el("caption", { class: "muted", text: "Markers in each message" }),
          el("thead", {}, el("tr", {}, el("th", { text: "marker" }), el("th", { class: "num", text: "A" }), el("th", { class: "num", text: "B" }))),
          el("tbody", {}, ...(changed.length ? changed : c.explanation.markers).map((m) =>
            el("tr", {}, el("td", { text: m.label }), el("td", { class: "num", text: String(m.a) }), el("td", { class: "num", text: String(m.b) }))))),
        legend([["dropped", "in A, did not appear in B"], ["new", "in B, new this time"]]),
        el("div", { class: "pair" },
          el("div", {}, el("h3", { text: "A" }), scoreBar(c.a), unusualNotice(c.a), shadedText(a, c.a, dropped)),
          el("div", {}, el("h3", { text: "B" }), scoreBar(c.b), unusualNotice(c.b), shadedText(b, c.b, fresh))),
      );
      out.hidden = false;
    });
  });
}

function figure(label, value) {
  return el("div", { class: "figure" }, el("span", { class: "muted", text: label }), el("span", { class: "value", text: value }));
}

// -------------------------------------------------------------------------------------------------------- timeline
let relationsLoaded = false;

async function loadRelations() {
  if (relationsLoaded) return;
  const select = $("relation");
  clearError($("timeline-error"));
  try {
    const { relations } = await api("/v1/relations");
    relationsLoaded = true;
    select.replaceChildren(...relations.map((r) => {
      const span = r.first ? `, ${r.first.slice(0, 4)}–${r.last.slice(0, 4)}` : "";
      const option = el("option", { value: JSON.stringify([r.sender, r.recipient]), text: `${r.sender} → ${r.recipient} (${r.messages}${span})` });
      return option;
    }));
    if (!relations.length) select.replaceChildren(el("option", { value: "", text: "No relation stored yet" }));
  } catch (error) {
    select.replaceChildren(el("option", { value: "", text: "Relations could not be loaded" }));
    showError($("timeline-error"), error);
  }
}

function setupTimeline() {
  const form = $("timeline-form"), out = $("timeline-result");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, $("timeline-error"), async () => {
      if (!$("relation").value) throw { title: "No relation chosen", detail: "choose a sender → recipient relation first" };
      const [sender, recipient] = JSON.parse($("relation").value);
      const params = new URLSearchParams({ sender, recipient });
      if ($("as-of").value) params.set("as_of", $("as-of").value);
      const timeline = await api(`/v1/timeline?${params}`);
      const gap = timeline.cadence.usual_gap_days;
      const occasions = timeline.cadence.occasions.map((o) => `${o.occasion.replaceAll("_", " ")} (${o.years.length} years, around ${o.usual_date})`);
      fill(out,
        el("h2", { text: `${sender} → ${recipient}` }),
        el("p", { class: "muted", text: `${timeline.messages.length} messages · usual gap ${gap === null ? "not yet known (too few messages)" : `${Math.round(gap)} days`} · recurring: ${occasions.join(", ") || "none yet"} · absences judged up to ${timeline.as_of}` }),
        chartLegend(),
        timelineChart(timeline, openMessage),
        el("h3", { text: "Absences" }),
        timeline.absences.length
          ? el("ul", { class: "absences" }, ...timeline.absences.map((a) => el("li", { "data-kind": a.kind }, a.kind === "long_silence" ? "Silence longer than usual: " : "Expected message that did not come: ", el("span", { text: a.detail }))))
          : el("p", { class: "muted", text: "None: nothing expected is missing, and no silence is longer than usual." }),
        el("a", { href: `/v1/timeline.svg?${params}`, text: "This chart as SVG (for embedding)" }),
      );
      out.hidden = false;
    });
  });
}

async function openMessage(id) {
  const panel = $("message-panel"), body = $("message-body");
  clearError($("label-error"));
  $("label-done").hidden = true;
  panel.hidden = false;
  panel.dataset.id = id;
  try {
    const m = await api(`/v1/messages/${id}`);
    const labels = m.labels.map((l) => `${l.annotator}: ${l.score}`).join(", ");
    $("message-title").textContent = `Message ${m.id}${m.date ? ` · ${m.date}` : ""}${m.occasion ? ` · ${m.occasion}` : ""}`;
    fill(body,
      m.published
        ? el("div", {}, headline({ ...m, interval: m.interval }), el("div", { class: "text", text: m.text }))
        : el("p", { class: "notice", text: "Known but unpublished: the agency named this message but printed no text. It counts for cadence and is not scored." }),
      el("p", { class: "muted", text: labels ? `Labels: ${labels} (mean ${m.label.toFixed(1)})` : "Not labelled yet." }),
    );
    $("label-form").hidden = !m.published;
  } catch (error) {
    body.replaceChildren();
    showError($("label-error"), error);
  }
  $("message-title").focus();
}

function setupLabel() {
  const form = $("label-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("message-panel").dataset.id;
    busy(form, $("label-error"), async () => {
      $("label-done").hidden = true;
      const body = { annotator: $("label-annotator").value.trim(), score: Number($("label-score").value) };
      const recorded = await api(`/v1/messages/${id}/label`, { method: "PUT", body });
      $("label-done").textContent = `Saved: ${recorded.annotator} scored message ${id} at ${recorded.score}; its label is now ${recorded.label.toFixed(1)} over ${recorded.annotators} annotator(s).`;
      $("label-done").hidden = false;
    });
  });
}

async function showServed() {
  try {
    const info = await api("/v1/info");
    $("served").textContent = `Model ${info.model_version}, ${info.engine}.`;
  } catch {
    $("served").textContent = "";
  }
}

setupTabs();
setupKey();
setupScore();
setupCompare();
setupTimeline();
setupLabel();
showServed();
