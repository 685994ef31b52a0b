// A hospital's own studies (status, priority, result, decision, SR download) and its referrals.
import {
  api, config, decisionLabel, downloadWithToken, formatScore, formatTime,
  poll, priorityBadge, requireSignIn, setUpdated, setupChrome, shortId, toast,
} from "./app.js";

const studiesBody = document.getElementById("studies-body");
const referralsBody = document.getElementById("referrals-body");
const errorEl = document.getElementById("hospital-error");

const STATUS_LABELS = {
  received: "Received",
  queued: "Queued",
  processing: "Processing",
  triaged: "Triaged",
  failed: "Failed",
};

function cell(row, content, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (content instanceof Node) td.appendChild(content); else td.textContent = content ?? "—";
  row.appendChild(td);
  return td;
}

function badge(text, className) {
  const span = document.createElement("span");
  span.className = `badge ${className}`;
  span.textContent = text;
  return span;
}

/** One item of `GET /v1/studies` (StudyPublic), as the table shows it. */
export function normaliseStudy(raw) {
  return {
    id: String(raw.id),
    uid: raw.study_instance_uid,
    received: raw.received_at,
    modality: raw.modality || "—",
    status: raw.status,
    priority: raw.priority,
    score: raw.suspicion_score,
    decision: raw.review_status === "decided" ? raw.decision : null,
    decidedAt: raw.decided_at,
    failure: raw.failure_reason,
  };
}

/** The specialist's note on a decided study (from its reviews); decisions never change. */
const notes = new Map();
function noteOf(studyId) {
  if (!notes.has(studyId)) {
    notes.set(studyId, api(`/v1/studies/${encodeURIComponent(studyId)}/reviews`)
      .then((reviews) => reviews.data.at(-1)?.note ?? "")
      .catch(() => { notes.delete(studyId); return ""; }));
  }
  return notes.get(studyId);
}

function renderStudies(studies) {
  document.getElementById("study-count").textContent = `${studies.length} ${studies.length === 1 ? "study" : "studies"}`;
  document.getElementById("studies-empty").hidden = studies.length > 0;
  studiesBody.replaceChildren(...studies.map((study) => {
    const row = document.createElement("tr");
    row.dataset.studyId = study.id;
    cell(row, formatTime(study.received));
    const id = document.createElement("span");
    id.className = "mono";
    id.textContent = shortId(study.id);
    id.title = study.uid || study.id;
    cell(row, id);
    cell(row, study.modality);
    const status = badge(STATUS_LABELS[study.status] || study.status, "badge-status");
    if (study.failure) status.title = study.failure;
    cell(row, status);
    cell(row, study.priority ? priorityBadge(study.priority) : "—");
    cell(row, formatScore(study.score), "num");
    const decided = Boolean(study.decision);
    const waiting = study.priority && study.priority !== "routine";
    const decisionCell = decided
      ? badge(decisionLabel(study.decision), "badge-decided")
      : waiting ? "Awaiting specialist" : "—";
    const td = cell(row, decisionCell);
    if (decided) {
      td.dataset.decision = study.decision;
      noteOf(study.id).then((note) => {
        if (!note) return;
        const text = document.createElement("div");
        text.className = "decision-note";
        text.textContent = note;
        td.appendChild(text);
      });
    }
    if (study.status === "triaged") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "btn btn-quiet";
      button.textContent = "Download SR";
      button.setAttribute("aria-label", `Download SR of study ${shortId(study.id)}`);
      button.addEventListener("click", () => {
        downloadWithToken(`/v1/studies/${encodeURIComponent(study.id)}/report.dcm`, `oncotriage-${shortId(study.id)}-sr.dcm`)
          .catch((error) => toast(`Could not download the report: ${error.message}`));
      });
      cell(row, button);
    } else {
      cell(row, "—");
    }
    return row;
  }));
}

/** One item of `GET /v1/referrals` (ReferralPublic). */
export function normaliseReferral(raw) {
  return {
    id: raw.id,
    studyId: String(raw.study_id),
    created: raw.created_at,
    status: raw.status,
    note: raw.note || "",
    centre: raw.to_centre?.name,
    by: raw.referred_by,
  };
}

function renderReferrals(referrals) {
  document.getElementById("referrals-empty").hidden = referrals.length > 0;
  referralsBody.replaceChildren(...referrals.map((referral) => {
    const row = document.createElement("tr");
    row.dataset.studyId = referral.studyId;
    cell(row, formatTime(referral.created));
    const id = document.createElement("span");
    id.className = "mono";
    id.textContent = shortId(referral.studyId);
    cell(row, id);
    cell(row, referral.centre ? `${referral.centre}${referral.by ? `, by ${referral.by}` : ""}` : "—");
    cell(row, referral.status);
    cell(row, referral.note || "—", "note");
    return row;
  }));
}

const PUSH_STATES = {
  delivered: "delivered",
  queued: "waiting to be sent",
  running: "being sent",
  retrying: "failed, will be retried",
  failed: "failed, given up",
};

/** `GET /v1/hospitals/me/results-destination` (ResultsPushPublic) as one sentence. */
export function pushSentence(view) {
  if (!view.destination) {
    return "Results are not sent to your PACS: ask the union's administrator to set a destination.";
  }
  const parts = [`Results go by ${view.destination.description}.`];
  const last = view.last_push;
  if (!last) {
    parts.push("Nothing sent yet.");
  } else {
    const what = last.version === "verified" ? "verified result" : "AI result";
    let sentence = `Last: the ${what} of study ${shortId(last.study_id || "")}, ` +
      `${PUSH_STATES[last.state] || last.state} after ${last.attempts} attempt(s)`;
    if (last.at) sentence += ` (${formatTime(last.at)})`;
    if (last.error && last.state !== "delivered") sentence += ` — ${last.error}`;
    parts.push(`${sentence}.`);
  }
  if (view.pending) parts.push(`${view.pending} waiting.`);
  if (view.failed) parts.push(`${view.failed} given up.`);
  return parts.join(" ");
}

async function refreshPush() {
  const element = document.getElementById("push-status");
  try {
    element.textContent = pushSentence(await api("/v1/hospitals/me/results-destination"));
    element.classList.toggle("error", false);
  } catch (error) {
    element.textContent = `Could not load the push status: ${error.message}`;
  }
}

async function refresh() {
  try {
    const [studies, referrals] = await Promise.all([
      api("/v1/studies?limit=200"),
      api("/v1/referrals?limit=200"),
    ]);
    renderStudies(studies.data.map(normaliseStudy));
    renderReferrals(referrals.data.map(normaliseReferral));
    await refreshPush();
    errorEl.textContent = "";
    setUpdated(document.getElementById("last-updated"));
  } catch (error) {
    errorEl.textContent = `Could not load your studies: ${error.message}`;
  }
}

if (requireSignIn("hospital")) {
  setupChrome();
  poll(refresh, config.refresh_s);
}
