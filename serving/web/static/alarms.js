// The drift-alarm banner shown on the worklist and the monitoring page: one line per active
// alarm (GET /v1/monitoring/alarms), saying what a hold means for the hospital's studies.
import { api } from "./app.js";

const METRIC_WORDS = {
  intensity_mean: "image brightness",
  intensity_histogram: "image intensity distribution",
  spacing: "pixel spacing",
  image_size: "image size",
  score: "model scores",
  flag_rate: "flag rate",
};

export function alarmText(alarm) {
  const what = METRIC_WORDS[alarm.metric] || alarm.metric;
  const where = alarm.device ? ` (${alarm.device})` : "";
  const moved = alarm.direction === "down" ? "fell" : "rose";
  const held = alarm.action === "hold"
    ? " ON HOLD: its new studies are not scored; they come here as needs manual review, in arrival order."
    : " Triage goes on; check the images.";
  return `Drift alarm — ${alarm.hospital}${where}: ${what} ${moved} away from what ${alarm.model} was trained on (after ${alarm.studies} studies).${held}`;
}

/** Fill `container` with the active alarms and the routes with no model ready (hidden when
 * there are none): nothing waits invisibly. */
export async function showAlarmBanner(container) {
  try {
    const [alarms, status] = await Promise.all([
      api("/v1/monitoring/alarms"), api("/v1/monitoring/status"),
    ]);
    const lines = alarms.data.map((alarm) => {
      const p = document.createElement("p");
      p.className = `alarm alarm-${alarm.action}`;
      p.dataset.alarm = String(alarm.id);
      p.dataset.action = alarm.action;
      p.textContent = alarmText(alarm);
      return p;
    });
    for (const model of status.models_unready) {
      const p = document.createElement("p");
      p.className = "alarm alarm-hold";
      p.dataset.route = model.route;
      p.textContent = `No model ready for ${model.route}: ${model.reason}. ${status.queued_jobs} job(s) wait in the queue until one loads.`;
      lines.push(p);
    }
    container.replaceChildren(...lines);
    container.hidden = lines.length === 0;
    return alarms.data;
  } catch {
    return []; // the banner is advisory: the page works without it
  }
}
