// Models in the field: drift alarms (with hold / warn / clear), real-world performance per
// model version x hospital x device x modality with Wilson 95 % intervals drawn as interval
// plots, score distributions, and champion against challenger (GET /v1/monitoring/...).
import { api, requireSignIn, setUpdated, setupChrome, toast } from "./app.js";
import { alarmText } from "./alarms.js";

const SVG = "http://www.w3.org/2000/svg";
const errorEl = document.getElementById("monitoring-error");

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function pct(value) { return value == null ? "—" : `${(value * 100).toFixed(1)} %`; }
function ci(interval) {
  if (!interval || !interval.n) return "—";
  return `${interval.k}/${interval.n} ${pct(interval.value)} (${pct(interval.low)}–${pct(interval.high)})`;
}

/** One row per (label, interval): a dot at the value, a line over its 95 % interval, 0..1. */
export function intervalPlot(title, rows) {
  const rowH = 20, labelW = 430, plotW = 320;
  const height = rows.length * rowH + 30;
  const svg = el("svg", { viewBox: `0 0 ${labelW + plotW + 230} ${height}`, role: "img", "aria-label": title, class: "intervals" });
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    const x = labelW + tick * plotW;
    svg.appendChild(el("line", { x1: x, x2: x, y1: 0, y2: height - 20, class: "grid" }));
    svg.appendChild(el("text", { x, y: height - 6, class: "tick", "text-anchor": "middle" }, `${tick * 100}%`));
  }
  rows.forEach((row, index) => {
    const y = index * rowH + 12;
    const short = row.label.length > 72 ? `${row.label.slice(0, 71)}…` : row.label;
    const label = el("text", { x: 0, y: y + 4, class: "group-label" }, short);
    label.appendChild(el("title", {}, row.label));
    svg.appendChild(label);
    const i = row.interval;
    if (i && i.n) {
      svg.appendChild(el("line", { x1: labelW + i.low * plotW, x2: labelW + i.high * plotW, y1: y, y2: y, class: `ci ${row.className || ""}` }));
      const dot = el("circle", { cx: labelW + i.value * plotW, cy: y, r: 4, class: `dot ${row.className || ""}` });
      dot.dataset.value = String(i.value);
      svg.appendChild(dot);
    }
    svg.appendChild(el("text", { x: labelW + plotW + 8, y: y + 4, class: "bar-value" }, ci(i)));
  });
  return svg;
}

/** Small bars: studies per tenth of the score. */
function histogram(counts) {
  const w = 12, h = 30, max = Math.max(1, ...counts);
  const svg = el("svg", { viewBox: `0 0 ${counts.length * w} ${h}`, class: "hist", role: "img", "aria-label": "score distribution" });
  counts.forEach((count, index) => {
    const barH = (count / max) * h;
    svg.appendChild(el("rect", { x: index * w + 1, y: h - barH, width: w - 2, height: barH, class: "bar s-flagged" }));
  });
  return svg;
}

function groupLabel(row) {
  const device = [row.manufacturer, row.device_model].filter(Boolean).join(" ") || "unknown device";
  return `${row.model} v${row.version} · ${row.hospital} · ${device} · ${row.modality}`;
}

async function setAlarm(id, action) {
  try {
    await api(`/v1/monitoring/alarms/${id}`, { method: "POST", body: { action } });
    toast(`Alarm ${id}: ${action}`);
  } catch (error) {
    errorEl.textContent = String(error.message || error);
  }
  loadAlarms();
}

async function loadAlarms() {
  const alarms = await api("/v1/monitoring/alarms");
  const body = document.getElementById("alarms-body");
  body.replaceChildren(...alarms.data.map((alarm) => {
    const tr = document.createElement("tr");
    tr.dataset.alarm = String(alarm.id);
    tr.dataset.action = alarm.action;
    const text = document.createElement("td");
    text.className = "wrap";
    text.textContent = alarmText(alarm);
    const raised = document.createElement("td");
    raised.textContent = new Date(alarm.raised_at).toLocaleString();
    const actions = document.createElement("td");
    for (const action of ["hold", "warn", "clear"]) {
      if (action === alarm.action) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "btn btn-quiet";
      button.dataset.do = action;
      button.textContent = action === "hold" ? "Hold hospital" : action === "warn" ? "Warn only" : "Clear";
      button.addEventListener("click", () => setAlarm(alarm.id, action));
      actions.appendChild(button);
    }
    tr.append(text, raised, actions);
    return tr;
  }));
  document.getElementById("alarms-empty").hidden = alarms.count > 0;
}

async function loadPerformance() {
  const perf = await api("/v1/monitoring/performance");
  const rows = perf.data;
  document.getElementById("sensitivity-chart").replaceChildren(intervalPlot("Sensitivity of flags",
    rows.map((row) => ({ label: groupLabel(row), interval: row.sensitivity, className: "s-cancer" }))));
  document.getElementById("flag-chart").replaceChildren(intervalPlot("Flag rate and manual-review rate",
    rows.flatMap((row) => [
      { label: `${groupLabel(row)} flagged`, interval: row.flag_rate, className: "s-flagged" },
      { label: `${groupLabel(row)} manual review`, interval: row.manual_review_rate, className: "s-returned" },
    ])));
  document.getElementById("performance-body").replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    tr.dataset.group = groupLabel(row);
    const cells = [groupLabel(row), String(row.studies), ci(row.flag_rate), ci(row.manual_review_rate), ci(row.sensitivity), ci(row.ppv)];
    cells.forEach((value, index) => {
      const td = document.createElement("td");
      if (index > 0) td.className = "num";
      td.textContent = value;
      tr.appendChild(td);
    });
    const hist = document.createElement("td");
    hist.appendChild(histogram(row.scores.histogram));
    tr.appendChild(hist);
    return tr;
  }));
  return [...new Set(rows.map((row) => row.model).filter((name) => name !== "(none)"))];
}

async function loadComparison(names) {
  const sections = [];
  for (const name of names) {
    const result = await api(`/v1/monitoring/compare/${encodeURIComponent(name)}`);
    for (const pair of result.pairs) {
      const section = document.createElement("section");
      section.className = "comparison";
      section.dataset.model = name;
      const h3 = document.createElement("h3");
      h3.textContent = `${name}: champion v${pair.champion_version} against challenger v${pair.challenger_version} on ${pair.studies} studies (${pair.labelled_positives} labelled positive)`;
      const p = document.createElement("p");
      p.className = "agreement";
      p.textContent = `Agreement ${ci(pair.agreement)} · both flagged ${pair.both_flagged} · champion only ${pair.champion_only} · challenger only ${pair.challenger_only} · neither ${pair.neither}`;
      const figure = document.createElement("figure");
      figure.className = "chart";
      figure.appendChild(intervalPlot(`${name} champion against challenger`, [
        { label: `champion v${pair.champion_version} flag rate`, interval: pair.champion.flag_rate, className: "s-flagged" },
        { label: `challenger v${pair.challenger_version} flag rate`, interval: pair.challenger.flag_rate, className: "s-referred" },
        { label: `champion v${pair.champion_version} sensitivity`, interval: pair.champion.sensitivity, className: "s-flagged" },
        { label: `challenger v${pair.challenger_version} sensitivity`, interval: pair.challenger.sensitivity, className: "s-referred" },
        { label: `champion v${pair.champion_version} PPV`, interval: pair.champion.ppv, className: "s-flagged" },
        { label: `challenger v${pair.challenger_version} PPV`, interval: pair.challenger.ppv, className: "s-referred" },
      ]));
      section.append(h3, p, figure);
      sections.push(section);
    }
  }
  document.getElementById("comparison").replaceChildren(...sections);
  document.getElementById("comparison-empty").hidden = sections.length > 0;
}

async function load() {
  try {
    await loadAlarms();
    const names = await loadPerformance();
    await loadComparison(names);
    const status = await api("/v1/monitoring/status");
    document.getElementById("monitor-status").textContent =
      `monitor: ${status.recorded} recorded, ${status.challenger_scored} scored by a challenger, backlog ${status.backlog}, ${status.dropped} dropped`;
    errorEl.textContent = "";
    setUpdated(document.getElementById("last-updated"));
  } catch (error) {
    errorEl.textContent = String(error.message || error);
  }
  document.body.dataset.ready = "true";
}

if (requireSignIn("specialist", "admin")) {
  setupChrome();
  load();
}
