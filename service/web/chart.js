// A relation's timeline as an SVG chart: bands, the interval as a band, the score line, moves flagged, unpublished
// messages and absences marked. Every point is focusable; Enter, Space or a click opens its message.
import { BANDS } from "./render.js";

const NS = "http://www.w3.org/2000/svg";
const W = 960, H = 380, LEFT = 48, RIGHT = 78, TOP = 24, BOTTOM = 36;
const COLOURS = { score: "#0b5cad", moved: "#b42318", absent: "#6e40c9", ink: "#1f2328" };
const BAND_FILL = { cold: "#dbe7f3", formal: "#e6ecef", cordial: "#eef1e4", warm: "#fbeedb", effusive: "#f9dfd3" };

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

const day = (iso) => Date.parse(`${iso}T00:00:00Z`);

export function timelineChart(timeline, onOpen) {
  const dated = timeline.messages.filter((p) => p.date);
  const times = [...dated.map((p) => day(p.date)), ...timeline.absences.flatMap((a) => [day(a.start), day(a.end)])];
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "group",
    "aria-label": `Timeline of ${timeline.sender} to ${timeline.recipient}: ${dated.length} dated messages, ${timeline.absences.length} absences` });
  if (!times.length) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "No dated messages in this relation."));
    return root;
  }
  const pad = Math.max(20 * 86400e3, (Math.max(...times) - Math.min(...times)) * 0.04);
  const t0 = Math.min(...times) - pad, t1 = Math.max(...times) + pad;
  const x = (t) => LEFT + ((t - t0) / (t1 - t0)) * (W - LEFT - RIGHT);
  const y = (s) => TOP + (1 - s / 100) * (H - TOP - BOTTOM);

  for (const [name, low, high] of BANDS) {
    root.append(svg("rect", { x: LEFT, y: y(high), width: W - LEFT - RIGHT, height: y(low) - y(high), fill: BAND_FILL[name] }));
    root.append(svg("text", { x: W - RIGHT + 6, y: (y(low) + y(high)) / 2 + 4, class: "band" }, name));
  }
  const axis = svg("g", { class: "axis" });
  for (const s of [0, 20, 40, 60, 80, 100]) axis.append(svg("text", { x: LEFT - 8, y: y(s) + 4, "text-anchor": "end" }, s));
  const first = new Date(t0).getUTCFullYear(), last = new Date(t1).getUTCFullYear();
  const step = Math.max(1, Math.ceil((last - first + 1) / 12));
  for (let year = first; year <= last + 1; year += step) {
    const t = Date.UTC(year, 0, 1);
    if (t < t0 || t > t1) continue;
    axis.append(svg("line", { x1: x(t), x2: x(t), y1: TOP, y2: H - BOTTOM, stroke: "#ffffff", "stroke-width": 1 }));
    axis.append(svg("text", { x: x(t), y: H - BOTTOM + 18, "text-anchor": "middle" }, year));
  }
  root.append(axis);

  for (const absence of timeline.absences) {
    const group = svg("g", { class: `absence ${absence.kind}`, "data-kind": absence.kind });
    group.append(svg("title", {}, absence.detail));
    if (absence.kind === "expected_occasion") {
      const at = x(day(absence.start));
      group.append(svg("line", { x1: at, x2: at, y1: TOP, y2: H - BOTTOM, stroke: COLOURS.absent, "stroke-width": 2, "stroke-dasharray": "6 4" }));
      group.append(svg("text", { x: at - 5, y: TOP + 6, transform: `rotate(-90 ${at - 5} ${TOP + 6})`, "text-anchor": "end", fill: COLOURS.absent, "font-weight": 600 },
        `no ${absence.occasion} ${absence.year}`));
    } else {
      const a = x(day(absence.start)), b = x(day(absence.end));
      group.append(svg("rect", { x: a, y: TOP, width: Math.max(b - a, 2), height: H - TOP - BOTTOM, fill: COLOURS.absent, "fill-opacity": 0.1 }));
      group.append(svg("text", { x: (a + b) / 2, y: y(50), "text-anchor": "middle", fill: COLOURS.absent, "font-style": "italic", "font-weight": 600 }, absence.ongoing ? "silence (ongoing)" : "silence"));
    }
    root.append(group);
  }

  const scored = dated.filter((p) => p.score !== null);
  if (scored.length) {
    const upper = scored.map((p) => `${x(day(p.date))},${y(p.interval[1])}`);
    const lower = scored.map((p) => `${x(day(p.date))},${y(p.interval[0])}`).reverse();
    root.append(svg("polygon", { points: [...upper, ...lower].join(" "), fill: COLOURS.score, "fill-opacity": 0.16 }));
    root.append(svg("polyline", { points: scored.map((p) => `${x(day(p.date))},${y(p.score)}`).join(" "), fill: "none", stroke: COLOURS.score, "stroke-width": 2 }));
  }
  for (const point of dated) root.append(pointMark(point, x(day(point.date)), point.score === null ? y(3) : y(point.score), onOpen));
  return root;
}

function pointMark(point, cx, cy, onOpen) {
  const what = point.score === null ? "known but unpublished (no text)" : `${point.score.toFixed(1)} (${point.band})${point.moved ? `, moved ${point.change > 0 ? "+" : ""}${point.change.toFixed(1)} beyond the interval` : ""}`;
  const label = `${point.date}${point.occasion ? ` ${point.occasion}` : ""}: ${what}. Open message ${point.id}`;
  const group = svg("g", { class: `point${point.moved ? " moved" : ""}${point.published ? "" : " unpublished"}`, tabindex: 0, role: "button", "aria-label": label, "data-id": point.id });
  group.append(svg("title", {}, label));
  if (point.score === null) {
    group.append(svg("rect", { x: cx - 6, y: cy - 6, width: 12, height: 12, transform: `rotate(45 ${cx} ${cy})`, fill: "#ffffff", stroke: COLOURS.ink, "stroke-width": 2 }));
    group.append(svg("text", { x: cx, y: cy - 12, "text-anchor": "middle", "font-size": 11 }, "unpublished"));
  } else {
    if (point.moved) {
      group.append(svg("circle", { cx, cy, r: 11, fill: "none", stroke: COLOURS.moved, "stroke-width": 2.5 }));
      group.append(svg("text", { x: cx, y: point.change > 0 ? cy - 16 : cy + 24, "text-anchor": "middle", fill: COLOURS.moved, "font-weight": 700 }, `moved ${point.change > 0 ? "+" : ""}${point.change.toFixed(0)}`));
    }
    group.append(svg("circle", { cx, cy, r: 6, fill: COLOURS.score, stroke: "#ffffff", "stroke-width": 1.5 }));
  }
  const open = () => onOpen(point.id);
  group.addEventListener("click", open);
  group.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); open(); }
  });
  return group;
}

export function chartLegend() {
  const items = [
    ["#0b5cad", "score (line) and 90% interval (band)"],
    ["#b42318", "moved beyond the interval"],
    ["#1f2328", "◇ known but unpublished"],
    ["#6e40c9", "absence: expected message missing (dashed) or silence (shaded)"],
  ];
  const list = document.createElement("ul");
  list.className = "legend";
  list.setAttribute("aria-label", "Chart legend");
  for (const [colour, text] of items) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.setAttribute("aria-hidden", "true");
    swatch.style.background = colour;
    item.append(swatch, text);
    list.append(item);
  }
  return list;
}
