// Shared by every page: the token, calls to the JSON API, the page chrome, formatting.
// The token lives in this tab's sessionStorage only and is sent as `Authorization: Bearer`.

const TOKEN_KEY = "oncotriage.token";
const ROLE_KEY = "oncotriage.role";
const NAME_KEY = "oncotriage.name";
const USER_KEY = "oncotriage.username";
const QUEUE_KEY = "oncotriage.queue";

export const config = JSON.parse(document.getElementById("page-config").textContent);

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

export function getToken() { return sessionStorage.getItem(TOKEN_KEY); }
export function getRole() { return sessionStorage.getItem(ROLE_KEY); }
/** The username that worklist claims name (`claimed_by`), for specialists. */
export function getUsername() { return sessionStorage.getItem(USER_KEY) || ""; }
export function setSession(token, role, name, username) {
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.setItem(ROLE_KEY, role);
  sessionStorage.setItem(NAME_KEY, name || "");
  sessionStorage.setItem(USER_KEY, username || "");
}
export function clearSession() {
  for (const key of [TOKEN_KEY, ROLE_KEY, NAME_KEY, USER_KEY, QUEUE_KEY]) sessionStorage.removeItem(key);
}

/** The study ids of the worklist as last shown, for j/k in the case view. */
export function rememberQueue(ids) { sessionStorage.setItem(QUEUE_KEY, JSON.stringify(ids)); }
export function rememberedQueue() {
  try { return JSON.parse(sessionStorage.getItem(QUEUE_KEY) || "[]"); } catch { return []; }
}

function errorDetail(body) {
  if (!body) return "";
  if (typeof body === "string") return body;
  const detail = body.detail ?? body.message ?? body.error;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return JSON.stringify(detail ?? body);
}

/**
 * Call the JSON API with this tab's token.
 * @param {string} path e.g. "/v1/worklist"
 * @param {{method?: string, body?: any, as?: "json"|"blob"|"response", token?: string, signIn?: boolean}} options
 */
export async function api(path, options = {}) {
  const token = options.token ?? getToken();
  const headers = { Accept: options.as === "blob" ? "*/*" : "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  const response = await fetch(path, { method: options.method || "GET", headers, body, cache: "no-store" });
  if (response.status === 401 && options.signIn !== false) {
    clearSession();
    window.location.assign(`/ui/?expired=1&next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new ApiError(401, "Your session has ended: sign in again.");
  }
  if (!response.ok) {
    let detail = "";
    try {
      const text = await response.text();
      try { detail = errorDetail(JSON.parse(text)); } catch { detail = text; }
    } catch { /* no body */ }
    throw new ApiError(response.status, detail || `${response.status} ${response.statusText}`);
  }
  if (options.as === "response") return response;
  if (options.as === "blob") return response.blob();
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

/** Items of a list response, whatever its envelope: `[...]`, `{data: [...]}`, `{items: [...]}`. */
export function itemsOf(payload, ...keys) {
  if (Array.isArray(payload)) return payload;
  if (!payload || typeof payload !== "object") return [];
  for (const key of [...keys, "data", "items", "results", "studies", "entries", "referrals"]) {
    if (Array.isArray(payload[key])) return payload[key];
  }
  return [];
}

/** First defined value among `obj[key]` for the given keys (dotted paths allowed). */
export function pick(obj, ...keys) {
  for (const key of keys) {
    let value = obj;
    for (const part of key.split(".")) {
      if (value == null) break;
      value = value[part];
    }
    if (value !== undefined && value !== null && value !== "") return value;
  }
  return undefined;
}

/** Redirect to the sign-in page unless this tab holds a token of one of `roles`. */
export function requireSignIn(...roles) {
  const token = getToken();
  const role = getRole();
  if (!token || (roles.length && !roles.includes(role))) {
    const next = encodeURIComponent(location.pathname + location.search);
    window.location.replace(`/ui/?next=${next}`);
    return false;
  }
  return true;
}

/** Header: navigation for the role, who is signed in, sign-out, the shortcuts dialog. */
export function setupChrome() {
  const role = getRole();
  const nav = document.getElementById("mainnav");
  if (role && nav) {
    nav.hidden = false;
    for (const link of nav.querySelectorAll("a[data-role]")) link.hidden = link.dataset.role !== role;
  }
  const who = document.getElementById("who");
  const name = sessionStorage.getItem(NAME_KEY);
  if (who && role) who.textContent = name ? `${name} (${role})` : `Signed in as ${role}`;
  const signOut = document.getElementById("sign-out");
  if (signOut && role) {
    signOut.hidden = false;
    signOut.addEventListener("click", () => { clearSession(); window.location.assign("/ui/"); });
  }
  const dialog = document.getElementById("shortcuts-dialog");
  const show = document.getElementById("show-shortcuts");
  if (dialog && show) {
    show.addEventListener("click", () => dialog.showModal());
    document.addEventListener("keydown", (event) => {
      if (event.key === "?" && !isTyping(event) && !dialog.open) { event.preventDefault(); dialog.showModal(); }
    });
  }
}

/** Whether a key event belongs to a text field (so single-letter shortcuts must not fire). */
export function isTyping(event) {
  const target = event.target;
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable) return true;
  const tag = target.tagName;
  if (tag === "TEXTAREA") return true;
  if (tag === "INPUT") {
    const type = (target.getAttribute("type") || "text").toLowerCase();
    return !["checkbox", "radio", "range", "button", "submit"].includes(type);
  }
  return tag === "SELECT";
}

export function hasModifier(event) { return event.ctrlKey || event.metaKey || event.altKey; }

const PRIORITY_LABELS = {
  urgent: "Urgent",
  suspicious: "Suspicious",
  needs_manual_review: "Manual review",
  routine: "Routine",
};

export function priorityBadge(priority) {
  const span = document.createElement("span");
  if (!priority) { span.textContent = "—"; return span; }
  span.className = `badge badge-${priority}`;
  span.textContent = PRIORITY_LABELS[priority] || priority;
  return span;
}

export function decisionLabel(decision) {
  return { refer: "Referred to the centre", return: "Returned to hospital", more_imaging: "More imaging requested" }[decision] || decision;
}

/** "3 min", "2 h 05 min", "3 d 4 h". */
export function formatDuration(minutes) {
  if (minutes == null || Number.isNaN(minutes)) return "—";
  const m = Math.max(0, Math.floor(minutes));
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${String(m % 60).padStart(2, "0")} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

export function minutesSince(iso) {
  if (!iso) return null;
  const t = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`);
  return Number.isNaN(t) ? null : (Date.now() - t) / 60000;
}

export function formatTime(iso) {
  if (!iso) return "—";
  const d = new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
}

/**
 * Waiting-time class by SLA: ok below 75 % of the SLA, warn up to it, over past it.
 * `overdue` from the API, when given, wins.
 */
export function slaState(waitMinutes, slaMinutes, overdue) {
  if (overdue === true) return "over";
  if (waitMinutes == null || !slaMinutes) return "ok";
  if (waitMinutes >= slaMinutes) return "over";
  if (waitMinutes >= 0.75 * slaMinutes) return "warn";
  return "ok";
}

export function formatScore(score) {
  return typeof score === "number" ? score.toFixed(2) : "—";
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : "—";
}

let toastTimer;
export function toast(message) {
  let el = document.getElementById("toast");
  if (!el) {
    el = document.createElement("div");
    el.id = "toast";
    el.className = "toast";
    el.setAttribute("role", "status");
    document.body.appendChild(el);
  }
  el.textContent = message;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.textContent = ""; }, 4000);
}

/** Call `tick` now and every `seconds`, skipping while the tab is hidden; never overlapping. */
export function poll(tick, seconds) {
  let running = false;
  const run = async () => {
    if (running || document.hidden) return;
    running = true;
    try { await tick(); } finally { running = false; }
  };
  run();
  const handle = setInterval(run, seconds * 1000);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) run(); });
  return () => clearInterval(handle);
}

export function setUpdated(el) {
  if (el) el.textContent = `updated ${new Date().toLocaleTimeString()}`;
}

/** Download a file that needs the bearer token (an <a href> cannot send it). */
export async function downloadWithToken(path, filename) {
  const blob = await api(path, { as: "blob" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
