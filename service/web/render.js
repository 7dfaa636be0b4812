// Drawing a scoring result: the score bar with its interval on the bands, the text shaded by sentence, the markers.

export const BANDS = [
  ["cold", 0, 20], ["formal", 20, 40], ["cordial", 40, 60], ["warm", 60, 80], ["effusive", 80, 100],
];

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const fmt = (x) => x.toFixed(1);

// A 0–100 bar: bands as background, the interval as a band, the score as a tick. Read out as one sentence.
export function scoreBar(result) {
  const [low, high] = result.interval;
  const bar = el("div", {
    class: "scorebar",
    role: "img",
    "aria-label": `score ${fmt(result.score)} (${result.band}), 90% interval ${fmt(low)} to ${fmt(high)}`,
  });
  const bands = el("div", { class: "bands" }, ...BANDS.map(([name]) => el("span", { class: `b-${name}`, text: name })));
  const interval = el("div", { class: "interval", title: `90% interval ${fmt(low)}–${fmt(high)}` });
  interval.style.left = `${low}%`;
  interval.style.width = `${Math.max(high - low, 0.5)}%`;
  const tick = el("div", { class: "tick" });
  tick.style.left = `${result.score}%`;
  bar.append(bands, interval, tick);
  for (const at of [0, 20, 40, 60, 80, 100]) {
    const label = el("span", { class: "scale", text: String(at) });
    label.style.left = `${at}%`;
    bar.append(label);
  }
  return bar;
}

export function headline(result, prefix = "") {
  const [low, high] = result.interval;
  return el(
    "div",
    { class: "headline" },
    prefix ? el("span", { class: "band-name", text: prefix }) : null,
    el("span", { class: "score-value", text: fmt(result.score) }),
    el("span", { class: "band-name", text: result.band }),
    el("span", { class: "muted", text: `90% interval ${fmt(low)}–${fmt(high)} · model ${result.model_version}` }),
  );
}

export function legend(extra = []) {
  const item = (cls, text) => el("li", {}, el("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), text);
  return el(
    "ul",
    { class: "legend", "aria-label": "Legend" },
    item("warm", "sentence adds warmth (the darker, the more)"),
    item("cool", "sentence takes warmth away"),
    item("marker", "marker of effusiveness (hover or focus for its kind)"),
    ...extra.map(([cls, text]) => item(cls, text)),
  );
}

export function unusualNotice(result) {
  if (!result.unusual) return null;
  const distance = result.distance === null || result.distance === undefined ? "" : ` (distance ${result.distance.toFixed(3)})`;
  return el("p", {
    class: "notice",
    role: "note",
    text: `This text is unlike the messages the model was trained on${distance}: read the score with care; its interval is wider.`,
  });
}

// The text with each sentence shaded by its contribution and each marker underlined; `marks` maps a sentence's
// "start:end" to an extra class and label ("dropped", "new") for the compare view.
export function shadedText(text, result, marks = new Map()) {
  const box = el("div", { class: "text", "data-testid": "shaded-text" });
  const peak = Math.max(0.5, ...result.sentences.map((s) => Math.abs(s.contribution)));
  let at = 0;
  for (const sentence of result.sentences) {
    if (sentence.start > at) box.append(text.slice(at, sentence.start));
    const span = el("span", { class: "sentence" });
    const strength = Math.abs(sentence.contribution) / peak;
    const rgb = sentence.contribution >= 0 ? "var(--warm)" : "var(--cool)";
    if (strength > 0.02) span.style.backgroundColor = `rgba(${rgb}, ${(0.08 + 0.32 * strength).toFixed(3)})`;
    span.dataset.contribution = sentence.contribution.toFixed(2);
    span.title = `sentence score ${fmt(sentence.score)}; contribution ${sentence.contribution >= 0 ? "+" : ""}${sentence.contribution.toFixed(1)}`;
    const mark = marks.get(`${sentence.start}:${sentence.end}`);
    if (mark) {
      span.classList.add(mark.cls);
      span.dataset.mark = mark.cls;
      span.setAttribute("aria-label", `${mark.label}: ${sentence.text}`);
    }
    span.append(...withMarkers(text, sentence.start, sentence.end, result.markers));
    box.append(span);
    at = sentence.end;
  }
  if (at < text.length) box.append(text.slice(at));
  return box;
}

function withMarkers(text, start, end, markers) {
  const parts = [];
  let at = start;
  for (const marker of markers.filter((m) => m.start >= start && m.end <= end).sort((a, b) => a.start - b.start)) {
    if (marker.start < at) continue; // overlapping markers: the first one wins
    if (marker.start > at) parts.push(text.slice(at, marker.start));
    const kind = marker.kind.replaceAll("_", " ");
    parts.push(el("mark", { class: "marker", tabindex: "0", "data-kind": kind, "aria-label": `${marker.text} (marker: ${kind})`, text: text.slice(marker.start, marker.end) }));
    at = marker.end;
  }
  if (at < end) parts.push(text.slice(at, end));
  return parts;
}

export function sentenceTable(result) {
  const rows = [...result.sentences].sort((a, b) => Math.abs(b.contribution) - Math.abs(a.contribution)).slice(0, 8);
  return el(
    "table",
    { class: "sentences-table" },
    el("caption", { class: "muted", text: "Sentences that move the score most" }),
    el("thead", {}, el("tr", {}, el("th", { class: "num", text: "contribution" }), el("th", { class: "num", text: "alone" }), el("th", { text: "sentence" }))),
    el("tbody", {}, ...rows.map((s) => el("tr", {}, el("td", { class: "num", text: `${s.contribution >= 0 ? "+" : ""}${s.contribution.toFixed(1)}` }), el("td", { class: "num", text: fmt(s.score) }), el("td", { text: s.text })))),
  );
}
