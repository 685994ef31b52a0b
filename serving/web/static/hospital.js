// A hospital's own studies (status, priority, result, decision, SR download) and its referrals.
import {
  ApiError, api, config, decisionLabel, downloadWithToken, formatScore, formatTime, itemsOf, pick,
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

export function normaliseStudy(raw) {
  return {
    id: String(pick(raw, "study_id", "id")),
    uid: pick(raw, "study_instance_uid"),
    received: pick(raw, "received_at", "created_at"),
    modality: pick(raw, "modality") ?? "—",
    status: pick(raw, "status") ?? "—",
    priority: pick(raw, "priority"),
    score: pick(raw, "suspicion_score", "score"),
    findings: pick(raw, "finding_count", "num_findings", "n_findings"),
    decision: pick(raw, "decision", "review.decision"),
    reviewStatus: pick(raw, "review_status"),
    decidedAt: pick(raw, "decided_at", "review.created_at"),
    note: pick(raw, "note", "review.note", "decision_note"),
    failure: pick(raw, "failure_reason"),
  };
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
    const decided = study.decision && (!study.reviewStatus || study.reviewStatus === "decided");
    const decisionCell = decided
      ? badge(decisionLabel(study.decision), "badge-decided")
      : study.priority && study.priority !== "routine" ? "Awaiting specialist" : "—";
    const td = cell(row, decisionCell);
    if (decided) td.dataset.decision = study.decision;
    if (decided && study.note) td.title = study.note;
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

export function normaliseReferral(raw) {
  return {
    id: pick(raw, "id"),
    studyId: String(pick(raw, "study_id", "study.id") ?? ""),
    created: pick(raw, "created_at", "decided_at"),
    decision: pick(raw, "decision") ?? "refer",
    status: pick(raw, "status") ?? "—",
    note: pick(raw, "note") ?? "",
    centre: pick(raw, "to_centre_name", "to_centre.name", "centre_name"),
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
    cell(row, decisionLabel(referral.decision) + (referral.centre ? ` (${referral.centre})` : ""));
    cell(row, referral.status);
    cell(row, referral.note || "—", "note");
    return row;
  }));
}

async function refresh() {
  try {
    const [studies, referrals] = await Promise.all([
      api("/v1/studies?limit=200"),
      api("/v1/referrals").catch((error) => {
        if (error instanceof ApiError && [403, 404].includes(error.status)) return [];
        throw error;
      }),
    ]);
    renderStudies(itemsOf(studies, "studies").map(normaliseStudy));
    renderReferrals(itemsOf(referrals, "referrals").map(normaliseReferral));
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
