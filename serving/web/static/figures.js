// The union's figures: two SVG bar charts drawn here (no charting library, no CDN) and the
// table per hospital and month, from GET /v1/figures; CSV from GET /v1/figures.csv.
import { api, downloadWithToken, requireSignIn, setUpdated, setupChrome } from "./app.js";

const SVG = "http://www.w3.org/2000/svg";
const errorEl = document.getElementById("figures-error");

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Grouped horizontal bars: one group per hospital, one bar per series; values printed. */
export function barChart(title, groups, series) {
  const barH = 14, gap = 4, groupGap = 14, labelW = 170, plotW = 360;
  const max = Math.max(1, ...groups.flatMap((g) => series.map((s) => g.values[s.key] ?? 0)));
  const height = groups.length * (series.length * (barH + gap) + groupGap) + 30;
  const svg = el("svg", { viewBox: `0 0 ${labelW + plotW + 140} ${height}`, role: "img", "aria-label": title, class: "bars" });
  let y = 8;
  for (const group of groups) {
    svg.appendChild(el("text", { x: 0, y: y + barH, class: "group-label" }, group.label));
    for (const s of series) {
      const value = group.values[s.key];
      const width = value == null ? 0 : Math.max(1, (value / max) * plotW);
      const bar = el("rect", { x: labelW, y, width, height: barH, class: `bar ${s.className}` });
      bar.dataset.series = s.key;
      bar.dataset.hospital = group.label;
      bar.dataset.value = value ?? "";
      svg.appendChild(bar);
      svg.appendChild(el("text", { x: labelW + width + 4, y: y + barH - 3, class: "bar-value" },
        value == null ? "—" : `${s.label} ${value}`));
      y += barH + gap;
    }
    y += groupGap;
  }
  return svg;
}

/** Per-hospital totals (counts summed over months; medians of the latest month with one). */
export function byHospital(rows) {
  const groups = new Map();
  for (const row of rows) {
    const g = groups.get(row.hospital) || { label: row.hospital, values: {} };
    for (const key of ["screened", "flagged", "referred_up", "returned_down", "confirmed_cancers"]) {
      g.values[key] = (g.values[key] || 0) + row[key];
    }
    for (const key of ["median_days_flag_to_decision", "median_days_decision_to_seen", "median_days_seen_to_diagnosis"]) {
      if (row[key] != null) g.values[key] = row[key];
    }
    groups.set(row.hospital, g);
  }
  return [...groups.values()];
}

function show(value) { return value == null ? "—" : String(value); }

async function load() {
  try {
    const figures = await api("/v1/figures");
    const groups = byHospital(figures.data);
    document.getElementById("volume-chart").replaceChildren(barChart("Counts per hospital", groups, [
      { key: "screened", label: "screened", className: "s-screened" },
      { key: "flagged", label: "flagged", className: "s-flagged" },
      { key: "referred_up", label: "referred up", className: "s-referred" },
      { key: "returned_down", label: "returned down", className: "s-returned" },
      { key: "confirmed_cancers", label: "cancers", className: "s-cancer" },
    ]));
    document.getElementById("delay-chart").replaceChildren(barChart("Median days per step", groups, [
      { key: "median_days_flag_to_decision", label: "to decision", className: "s-flagged" },
      { key: "median_days_decision_to_seen", label: "to visit", className: "s-referred" },
      { key: "median_days_seen_to_diagnosis", label: "to diagnosis", className: "s-cancer" },
    ]));
    document.getElementById("figures-body").replaceChildren(...figures.data.map((row) => {
      const tr = document.createElement("tr");
      tr.dataset.hospital = row.hospital;
      const cells = [row.hospital, row.month, row.screened, row.flagged, row.referred_up,
        row.returned_down, row.confirmed_cancers, row.ppv == null ? null : row.ppv.toFixed(2),
        row.median_days_flag_to_decision, row.median_days_decision_to_seen,
        row.median_days_seen_to_diagnosis, row.overdue_steps, row.lost_to_follow_up];
      cells.forEach((value, index) => {
        const td = document.createElement("td");
        if (index > 1) td.className = "num";
        td.textContent = show(value);
        tr.appendChild(td);
      });
      return tr;
    }));
    document.getElementById("figures-count").textContent = `${figures.count} hospital-months`;
    errorEl.textContent = "";
    setUpdated(document.getElementById("last-updated"));
  } catch (error) {
    errorEl.textContent = String(error.message || error);
  }
  document.body.dataset.ready = "true";
}

if (requireSignIn("specialist", "admin", "hospital")) {
  setupChrome();
  document.getElementById("download-csv").addEventListener("click",
    () => downloadWithToken("/v1/figures.csv", "oncotriage-figures.csv"));
  load();
}
