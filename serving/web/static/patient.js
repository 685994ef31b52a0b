// One patient's timeline: studies, AI results, decisions, referral steps, follow-ups, outcomes.
import { api, formatTime, requireSignIn, setUpdated, setupChrome, shortId } from "./app.js";

const body = document.getElementById("timeline-body");
const errorEl = document.getElementById("timeline-error");
const patientId = location.pathname.split("/").filter(Boolean).at(-1);

const LABELS = {
  "study.received": "Study received",
  "study.triaged": "AI result",
  decision: "Specialist decision",
  "referral.requested": "Referred up",
  "referral.scheduled": "Appointment scheduled",
  "referral.seen": "Seen at the centre",
  outcome: "Diagnosis",
  "referral.diagnosed": "Diagnosis recorded",
  "referral.returned": "Returned down",
  "followup.set": "Follow-up set",
  "referral.acknowledged": "Return acknowledged",
  "referral.closed": "Referral closed",
  "referral.lost": "Lost to follow-up",
  "followup.closed": "Follow-up done",
};

export function describe(entry) {
  const d = entry.detail || {};
  switch (entry.kind) {
    case "study.received": return `${d.modality || ""} study ${shortId(entry.study_id)}`;
    case "study.triaged": return `${d.priority} · score ${Number(d.suspicion_score).toFixed(2)} · ${d.model}`;
    case "decision": return `${d.decision} by ${d.by}`;
    case "referral.scheduled": return `appointment ${formatTime(d.appointment_at)}`;
    case "outcome": return [d.kind, d.site, d.histology, d.stage && `stage ${d.stage}`].filter(Boolean).join(" · ");
    case "referral.returned": return d.plan || "";
    case "followup.set": return `${d.modality} in ${d.months} months (Lung-RADS ${d.category}), due ${formatTime(d.due_at)}`;
    case "referral.lost": return `marked by ${d.marked_by}`;
    default: return "";
  }
}

async function load() {
  try {
    const timeline = await api(`/v1/patients/${encodeURIComponent(patientId)}/timeline`);
    body.replaceChildren(...timeline.data.map((entry) => {
      const row = document.createElement("tr");
      row.dataset.kind = entry.kind;
      for (const text of [formatTime(entry.at), LABELS[entry.kind] || entry.kind, entry.hospital, describe(entry)]) {
        const td = document.createElement("td");
        td.textContent = text || "—";
        row.appendChild(td);
      }
      return row;
    }));
    document.getElementById("timeline-count").textContent = `${timeline.count} entries`;
    const list = document.getElementById("followups");
    list.replaceChildren(...timeline.open_followups.map((f) => {
      const li = document.createElement("li");
      li.textContent = `${f.modality} in ${f.months} months (Lung-RADS ${f.category}), due ${formatTime(f.due_at)}`;
      return li;
    }));
    document.getElementById("followups-empty").hidden = timeline.open_followups.length > 0;
    errorEl.textContent = "";
    setUpdated(document.getElementById("last-updated"));
    document.body.dataset.ready = "true";
  } catch (error) {
    errorEl.textContent = error.status === 404 ? "No such patient among yours." : String(error.message || error);
    document.body.dataset.ready = "true";
  }
}

if (requireSignIn("specialist", "hospital", "admin")) {
  setupChrome();
  load();
}
