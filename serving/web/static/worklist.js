// The flagged queue: polls GET /v1/worklist, keeps the selection across refreshes, j/k/Enter.
import {
  api, config, formatDuration, formatScore, getUsername, hasModifier, isTyping, minutesSince,
  poll, priorityBadge, rememberQueue, requireSignIn, setUpdated, setupChrome, shortId, slaState,
} from "./app.js";
import { showAlarmBanner } from "./alarms.js";

const body = document.getElementById("worklist-body");
const empty = document.getElementById("queue-empty");
const errorEl = document.getElementById("worklist-error");
const countEl = document.getElementById("queue-count");
const updatedEl = document.getElementById("last-updated");
const filters = document.getElementById("filters");

let entries = [];
let selectedId = null;

/** One item of `GET /v1/worklist` (WorklistItemPublic), as the table shows it. */
export function normaliseEntry(raw, username = getUsername()) {
  return {
    id: String(raw.id),
    priority: raw.priority,
    overdue: Boolean(raw.overdue),
    waitingMin: raw.waiting_minutes ?? minutesSince(raw.triaged_at ?? raw.received_at),
    slaMin: raw.sla_minutes ?? config.sla_minutes[raw.priority],
    hospital: raw.hospital?.name ?? "—",
    hospitalId: raw.hospital ? String(raw.hospital.id) : "",
    modality: raw.modality || "—",
    score: raw.suspicion_score,
    model: [raw.model_name, raw.model_version].filter(Boolean).join(" v") || "—",
    claimedBy: raw.claimed_by,
    claimedByMe: Boolean(raw.claimed_by && username && raw.claimed_by === username),
  };
}

function currentFilters() {
  const data = new FormData(filters);
  return {
    priority: data.get("priority") || "",
    modality: data.get("modality") || "",
    mine: data.get("mine") === "on",
    hospital: data.get("hospital") || "",
  };
}

async function refresh() {
  const f = currentFilters();
  const params = new URLSearchParams();
  if (f.priority) params.set("priority", f.priority);
  if (f.hospital) params.set("hospital_id", f.hospital);
  params.set("limit", "500");
  try {
    showAlarmBanner(document.getElementById("alarm-banner"));
    const payload = await api(`/v1/worklist${params.size ? `?${params}` : ""}`);
    let list = payload.data.map((raw) => normaliseEntry(raw));
    // The API filters by priority; modality and "mine" are filtered here.
    if (f.modality) list = list.filter((e) => e.modality === f.modality);
    if (f.mine) list = list.filter((e) => e.claimedByMe);
    updateHospitalChoices(payload.data);
    if (f.hospital) list = list.filter((e) => e.hospitalId === f.hospital);
    entries = list;
    errorEl.textContent = "";
    render();
    setUpdated(updatedEl);
  } catch (error) {
    errorEl.textContent = `Could not load the worklist: ${error.message}`;
  }
}

/** Offer every hospital seen on the worklist in the hospital filter (keeping the choice). */
const hospitals = new Map();
function updateHospitalChoices(items) {
  const select = document.getElementById("filter-hospital");
  let changed = false;
  for (const item of items) {
    if (item.hospital && !hospitals.has(String(item.hospital.id))) {
      hospitals.set(String(item.hospital.id), item.hospital.name);
      changed = true;
    }
  }
  if (!changed) return;
  const chosen = select.value;
  const options = [...hospitals].sort((a, b) => a[1].localeCompare(b[1])).map(([id, name]) => new Option(name, id));
  select.replaceChildren(new Option("All", ""), ...options);
  select.value = chosen;
}

function cell(row, content, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (content instanceof Node) td.appendChild(content); else td.textContent = content ?? "—";
  row.appendChild(td);
  return td;
}

function render() {
  rememberQueue(entries.map((e) => e.id));
  countEl.textContent = `${entries.length} flagged ${entries.length === 1 ? "study" : "studies"}`;
  empty.hidden = entries.length > 0;
  if (!entries.some((e) => e.id === selectedId)) selectedId = entries[0]?.id ?? null;
  const rows = entries.map((entry) => {
    const row = document.createElement("tr");
    row.dataset.studyId = entry.id;
    row.setAttribute("aria-selected", String(entry.id === selectedId));
    const badge = priorityBadge(entry.priority);
    if (entry.overdue) badge.title = "Waiting past its SLA: moved up";
    cell(row, badge);
    const state = slaState(entry.waitingMin, entry.slaMin, entry.overdue);
    const wait = document.createElement("span");
    wait.className = `wait wait-${state}`;
    wait.textContent = formatDuration(entry.waitingMin) + (state === "over" ? " · overdue" : "");
    wait.title = entry.slaMin ? `SLA ${formatDuration(entry.slaMin)}` : "";
    cell(row, wait);
    cell(row, entry.hospital);
    cell(row, entry.modality);
    const link = document.createElement("a");
    link.href = `/ui/cases/${encodeURIComponent(entry.id)}`;
    link.textContent = shortId(entry.id);
    link.className = "mono";
    link.setAttribute("aria-label", `Open case ${shortId(entry.id)}`);
    cell(row, link);
    cell(row, formatScore(entry.score), "num");
    cell(row, entry.model);
    cell(row, entry.claimedByMe ? "me" : entry.claimedBy ? String(entry.claimedBy) : "—");
    row.addEventListener("click", (event) => {
      if (event.target instanceof HTMLAnchorElement) return;
      open(entry.id);
    });
    return row;
  });
  body.replaceChildren(...rows);
}

function open(id) {
  window.location.assign(`/ui/cases/${encodeURIComponent(id)}`);
}

function move(step) {
  if (!entries.length) return;
  const index = Math.max(0, entries.findIndex((e) => e.id === selectedId));
  const next = Math.min(entries.length - 1, Math.max(0, index + step));
  selectedId = entries[next].id;
  for (const row of body.rows) row.setAttribute("aria-selected", String(row.dataset.studyId === selectedId));
  body.querySelector(`tr[aria-selected="true"]`)?.scrollIntoView({ block: "nearest" });
}

function onKey(event) {
  if (isTyping(event) || hasModifier(event) || document.querySelector("dialog[open]")) return;
  if (event.key === "j") { move(1); event.preventDefault(); }
  else if (event.key === "k") { move(-1); event.preventDefault(); }
  else if ((event.key === "Enter" || event.key === "o") && selectedId && !(event.target instanceof HTMLAnchorElement || event.target instanceof HTMLButtonElement)) {
    open(selectedId); event.preventDefault();
  }
}

if (requireSignIn("specialist")) {
  setupChrome();
  filters.addEventListener("change", refresh);
  filters.addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
  document.addEventListener("keydown", onKey);
  // Poll on a timer; a change of filters refreshes at once.
  poll(refresh, config.refresh_s);
}
