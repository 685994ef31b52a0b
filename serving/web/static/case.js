// The case view: the study's image with the model's boxes, claim/release, the decision.
import {
  ApiError, api, config, decisionLabel, formatDuration, formatScore, formatTime, getToken,
  hasModifier, isTyping, itemsOf, minutesSince, pick, priorityBadge, rememberedQueue,
  requireSignIn, setupChrome, shortId, toast,
} from "./app.js";
import { Viewer, attachPointer } from "./viewer.js";

/** CT windows (Hounsfield units): [centre, width]. "default" is the server's own choice. */
export const WINDOW_PRESETS = {
  lung: [-600, 1500],
  mediastinum: [50, 350],
  bone: [400, 1800],
  default: null,
};

const DECISION_ACTIONS = {
  refer: "Refer the patient to the centre",
  return: "Return the case to the community hospital",
  more_imaging: "Ask the hospital for more imaging",
};

const studyId = config.study_id;
const $ = (id) => document.getElementById(id);
const els = {
  viewport: $("viewport"), msg: $("viewport-msg"), slice: $("slice"), sliceLabel: $("slice-label"),
  sliceGroup: $("slice-group"), series: $("series"), seriesGroup: $("series-group"),
  zoomLabel: $("zoom-label"), showBoxes: $("show-boxes"), drawMode: $("draw-mode"),
  title: $("case-title"), priority: $("case-priority"), facts: $("case-facts"), error: $("case-error"),
  findings: $("findings-list"), claimState: $("claim-state"), claimBtn: $("claim-btn"),
  releaseBtn: $("release-btn"), note: $("note"), confirm: $("confirm"), confirmText: $("confirm-text"),
  decisionButtons: document.querySelector(".decision-buttons"),
  confirmYes: $("confirm-yes"), confirmNo: $("confirm-no"), decisionState: $("decision-state"),
};

const state = {
  study: null,
  series: [], // {id, uid, modality, isVolume, slices}
  seriesIndex: 0,
  slice: 0,
  preset: "default",
  boxes: [], // {key, source, findingId, seriesId, score, box: [...], deleted}
  drawnCount: 0,
  claimedByMe: false,
  claimedBy: null,
  decided: null,
  pendingDecision: null,
  drawMode: false,
  imageSeq: 0,
  cache: new Map(),
};

const viewer = new Viewer(els.viewport, $("image-canvas"), $("overlay-canvas"));
viewer.onZoom = (scale) => { els.zoomLabel.textContent = `${Math.round(scale * 100)}%`; };
// For the browser tests and for debugging from the console.
window.oncotriageViewer = viewer;
window.oncotriageCase = state;

// ---------------------------------------------------------------- loading

function normaliseSeries(raw, index) {
  const modality = pick(raw, "modality") ?? pick(state.study, "modality") ?? "";
  const slices = Number(pick(raw, "num_slices", "slices", "n_slices", "depth", "number_of_slices",
    "instance_count", "num_instances", "frames") ?? 1);
  const isVolume = Boolean(pick(raw, "is_volume")) || (modality === "CT" && slices > 1);
  return {
    id: pick(raw, "id", "series_id") ?? index,
    uid: pick(raw, "series_instance_uid", "uid") ?? "",
    modality,
    isVolume,
    slices: isVolume ? Math.max(1, slices) : 1,
    cols: Number(pick(raw, "columns", "cols", "width", "shape.0")) || null,
    rows: Number(pick(raw, "rows", "height", "shape.1")) || null,
  };
}

function normaliseFinding(raw, index) {
  const box = (pick(raw, "box_index", "box", "box_pixel", "pixel_box") || []).map(Number);
  return {
    key: `m${pick(raw, "id") ?? index}`,
    source: "model",
    findingId: pick(raw, "id"),
    seriesId: pick(raw, "series_id"),
    seriesUid: pick(raw, "series_instance_uid"),
    label: pick(raw, "label") ?? 0,
    score: pick(raw, "score"),
    box,
    boxWorld: (pick(raw, "box_world") || []).map(Number),
    deleted: false,
  };
}

function currentSeries() { return state.series[state.seriesIndex]; }

function boxOnSeries(box, series) {
  if (box.seriesId != null && series.id != null) return String(box.seriesId) === String(series.id);
  if (box.seriesUid && series.uid) return box.seriesUid === series.uid;
  return true;
}

/**
 * Whether an `xyzxyz` box (index space, integers at voxel centres) meets slice `s`; the same
 * rule as the server's renderer.
 */
export function onSlice(box, s) {
  return box[2] <= s + 0.5 && s - 0.5 <= box[5];
}

/** The slice at the centre of an `xyzxyz` box's z range. */
export function centreSlice(box) {
  return Math.floor((box[2] + box[5]) / 2 + 0.5);
}

/**
 * Index-space (voxel centres at integers) -> displayed-picture coordinates (a pixel covers
 * [u, u+1)). The server may resample the picture (square pixels, longest side capped), so the
 * factor is the picture's size over the source's columns/rows when those are known.
 */
function indexToPicture(series, x, y) {
  const [fx, fy] = pictureScale(series);
  return [(x + 0.5) * fx, (y + 0.5) * fy];
}

function pictureToIndex(series, u, v) {
  const [fx, fy] = pictureScale(series);
  return [u / fx - 0.5, v / fy - 0.5];
}

function pictureScale(series) {
  const image = viewer.image;
  if (!image || !series?.cols || !series?.rows) return [1, 1];
  return [image.width / series.cols, image.height / series.rows];
}

/** Boxes of the current series visible on the current slice, as viewer rectangles. */
function visibleBoxes() {
  const series = currentSeries();
  if (!series) return [];
  return state.boxes
    .filter((b) => !b.deleted && boxOnSeries(b, series))
    .filter((b) => b.box.length !== 6 || onSlice(b.box, state.slice))
    .map((b) => {
      const [x0, y0, x1, y1] = b.box.length === 6 ? [b.box[0], b.box[1], b.box[3], b.box[4]] : b.box;
      return {
        key: b.key,
        source: b.source,
        rect: [...indexToPicture(series, x0, y0), ...indexToPicture(series, x1, y1)],
        label: b.source === "model" ? formatScore(b.score) : "added",
      };
    });
}

async function loadStudy() {
  const [study, result] = await Promise.all([
    api(`/v1/studies/${encodeURIComponent(studyId)}`),
    api(`/v1/studies/${encodeURIComponent(studyId)}/result`).catch((error) => {
      if (error instanceof ApiError && [404, 409].includes(error.status)) return null;
      throw error;
    }),
  ]);
  state.study = { ...(result || {}), ...study };
  const seriesRaw = itemsOf(study.series ?? result?.series ?? [], "series");
  state.series = seriesRaw.map(normaliseSeries);
  if (!state.series.length) state.series = [normaliseSeries({ modality: study.modality }, 0)];
  state.boxes = itemsOf(result?.findings ?? study.findings ?? [], "findings").map(normaliseFinding);
  readClaim(study);
  renderFacts();
  renderSeriesControls();
  renderFindings();
  renderClaim();
  // Start on the slice of the highest-scoring finding.
  const top = [...state.boxes].sort((a, b) => (b.score ?? 0) - (a.score ?? 0))[0];
  if (top) {
    const index = state.series.findIndex((s) => boxOnSeries(top, s));
    if (index >= 0) state.seriesIndex = index;
    if (top.box.length === 6) state.slice = centreSlice(top.box);
  } else if (currentSeries().isVolume) {
    state.slice = Math.floor(currentSeries().slices / 2);
  }
  renderSeriesControls();
  await showImage();
}

function readClaim(study) {
  const claimedBy = pick(study, "claimed_by_name", "claimed_by.display_name", "claimed_by.username", "claimed_by", "claim.user");
  const expires = pick(study, "claim_expires_at", "claim.expires_at");
  const active = claimedBy && (!expires || minutesSince(expires) < 0);
  state.claimedBy = active ? claimedBy : null;
  state.claimedByMe = Boolean(active && pick(study, "claimed_by_me", "claim.mine"));
  const decision = pick(study, "decision", "review.decision");
  const reviewStatus = pick(study, "review_status");
  state.decided = decision && (reviewStatus ? reviewStatus === "decided" : true) ? decision : null;
}

function imageUrl(series, slice, preset) {
  const params = new URLSearchParams();
  if (series.uid) params.set("series", series.uid); else if (series.id != null) params.set("series", series.id);
  if (series.isVolume) params.set("slice", String(slice));
  const window = WINDOW_PRESETS[preset];
  if (window) {
    params.set("window", preset);
    params.set("wc", String(window[0]));
    params.set("ww", String(window[1]));
  }
  params.set("boxes", "false");
  return `/v1/studies/${encodeURIComponent(studyId)}/render.png?${params}`;
}

async function fetchImage(url) {
  if (state.cache.has(url)) return state.cache.get(url);
  const promise = api(url, { as: "blob" }).then((blob) => createImageBitmap(blob));
  state.cache.set(url, promise);
  promise.catch(() => state.cache.delete(url));
  if (state.cache.size > 96) state.cache.delete(state.cache.keys().next().value);
  return promise;
}

async function showImage() {
  const series = currentSeries();
  const seq = ++state.imageSeq;
  els.viewport.dataset.ready = "false";
  const url = imageUrl(series, state.slice, state.preset);
  if (!viewer.image) els.msg.textContent = "Loading image…";
  try {
    const image = await fetchImage(url);
    if (seq !== state.imageSeq) return;
    viewer.setImage(image);
    viewer.setBoxes(visibleBoxes());
    els.msg.textContent = "";
    els.viewport.dataset.ready = "true";
    $("image-canvas").setAttribute("aria-label", describeImage(series));
    // Prefetch the neighbours so scrolling stays smooth.
    if (series.isVolume) {
      for (const s of [state.slice + 1, state.slice - 1]) {
        if (s >= 0 && s < series.slices) fetchImage(imageUrl(series, s, state.preset)).catch(() => {});
      }
    }
  } catch (error) {
    if (seq !== state.imageSeq) return;
    els.msg.textContent = `Could not load the image: ${error.message}`;
  }
}

function describeImage(series) {
  const where = series.isVolume ? `, slice ${state.slice + 1} of ${series.slices}` : "";
  const n = visibleBoxes().length;
  return `${series.modality || "Study"} image${where}, ${state.preset} window, ${n} box${n === 1 ? "" : "es"} shown`;
}

// ---------------------------------------------------------------- rendering the side panel

function fact(term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  if (value instanceof Node) dd.appendChild(value); else dd.textContent = value ?? "—";
  els.facts.append(dt, dd);
}

function renderFacts() {
  const s = state.study;
  els.title.textContent = `Case ${shortId(studyId)}`;
  document.title = `Case ${shortId(studyId)} · oncotriage`;
  const badge = priorityBadge(pick(s, "priority"));
  els.priority.replaceWith(badge);
  badge.id = "case-priority";
  els.priority = badge;
  els.facts.replaceChildren();
  fact("Hospital", pick(s, "hospital_name", "hospital.name", "hospital"));
  fact("Modality", pick(s, "modality"));
  fact("Received", formatTime(pick(s, "received_at")));
  fact("Waiting", formatDuration(minutesSince(pick(s, "triaged_at", "received_at"))));
  fact("Score", formatScore(pick(s, "suspicion_score", "score")));
  const model = [pick(s, "model_name"), pick(s, "model_version")].filter(Boolean).join(" v");
  fact("Model", model || "—");
  fact("Status", pick(s, "status"));
  const reason = pick(s, "failure_reason");
  if (reason) fact("Why flagged", reason);
  const uid = document.createElement("span");
  uid.className = "mono";
  uid.textContent = pick(s, "study_instance_uid") ?? studyId;
  fact("Study UID", uid);
}

function renderSeriesControls() {
  const series = currentSeries();
  els.seriesGroup.hidden = state.series.length < 2;
  if (state.series.length > 1 && els.series.options.length !== state.series.length) {
    els.series.replaceChildren(...state.series.map((s, i) => new Option(`${i + 1}: ${s.modality} (${s.slices} slice${s.slices === 1 ? "" : "s"})`, String(i))));
  }
  els.series.value = String(state.seriesIndex);
  els.sliceGroup.hidden = !series.isVolume;
  els.slice.max = String(series.slices - 1);
  state.slice = Math.min(Math.max(0, state.slice), series.slices - 1);
  els.slice.value = String(state.slice);
  els.sliceLabel.textContent = `${state.slice + 1} / ${series.slices}`;
  const ct = series.modality === "CT";
  for (const button of document.querySelectorAll("[data-preset]")) {
    const preset = button.dataset.preset;
    button.disabled = !ct && preset !== "default";
    button.title = button.disabled ? "Hounsfield windows apply to CT only" : button.title;
    button.setAttribute("aria-pressed", String(preset === state.preset));
  }
}

function findingText(box, index) {
  if (box.source === "drawn") {
    const where = box.box.length === 6 ? ` on slice ${Math.round(box.box[2]) + 1}` : "";
    return `Added box ${index}${where}`;
  }
  let size = "";
  const w = box.boxWorld;
  if (w.length === 4) size = ` · ${Math.abs(w[2] - w[0]).toFixed(0)}×${Math.abs(w[3] - w[1]).toFixed(0)} mm`;
  if (w.length === 6) size = ` · ${Math.max(Math.abs(w[3] - w[0]), Math.abs(w[4] - w[1]), Math.abs(w[5] - w[2])).toFixed(0)} mm`;
  const where = box.box.length === 6 ? ` · slices ${Math.ceil(box.box[2] - 0.5) + 1}–${Math.floor(box.box[5] + 0.5) + 1}` : "";
  return `Score ${formatScore(box.score)}${size}${where}`;
}

function renderFindings() {
  const items = state.boxes.map((box, i) => {
    const li = document.createElement("li");
    li.dataset.key = box.key;
    li.classList.toggle("deleted", box.deleted);
    li.classList.toggle("selected", box.key === viewer.selectedKey);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.borderColor = box.source === "model" ? "#b38f00" : "#008a99";
    swatch.setAttribute("aria-hidden", "true");
    const what = document.createElement("span");
    what.className = "what";
    what.textContent = findingText(box, i + 1) + (box.deleted ? " (deleted)" : "");
    const show = document.createElement("button");
    show.type = "button";
    show.className = "btn btn-quiet";
    show.textContent = "Show";
    show.setAttribute("aria-label", `Show ${box.source === "model" ? "finding" : "added box"} ${i + 1}`);
    show.disabled = box.deleted;
    show.addEventListener("click", () => goToBox(box));
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "btn btn-quiet";
    toggle.textContent = box.deleted ? "Restore" : "Delete";
    toggle.setAttribute("aria-label", `${toggle.textContent} ${box.source === "model" ? "finding" : "added box"} ${i + 1}`);
    toggle.disabled = Boolean(state.decided);
    toggle.addEventListener("click", () => deleteBox(box.key, !box.deleted));
    li.append(swatch, what, show, toggle);
    return li;
  });
  if (!items.length) {
    const li = document.createElement("li");
    li.textContent = "The model reported no boxes.";
    items.push(li);
  }
  els.findings.replaceChildren(...items);
}

function renderClaim() {
  const decided = Boolean(state.decided);
  if (decided) {
    els.claimState.textContent = "Decided.";
    els.decisionState.textContent = `Decision: ${decisionLabel(state.decided)}`;
  } else if (state.claimedByMe) {
    els.claimState.textContent = "You hold this case.";
  } else if (state.claimedBy) {
    els.claimState.textContent = `Claimed by ${state.claimedBy}.`;
  } else {
    els.claimState.textContent = "Not claimed.";
  }
  els.claimBtn.hidden = decided || state.claimedByMe;
  els.claimBtn.disabled = Boolean(state.claimedBy) && !state.claimedByMe;
  els.releaseBtn.hidden = decided || !state.claimedByMe;
  for (const button of document.querySelectorAll("[data-decision]")) {
    button.disabled = decided || (Boolean(state.claimedBy) && !state.claimedByMe);
  }
  els.note.disabled = decided;
}

// ---------------------------------------------------------------- actions

function redrawBoxes() {
  viewer.setBoxes(visibleBoxes());
  renderFindings();
}

function goToBox(box) {
  const index = state.series.findIndex((s) => boxOnSeries(box, s));
  if (index >= 0 && index !== state.seriesIndex) state.seriesIndex = index;
  if (box.box.length === 6) state.slice = centreSlice(box.box);
  viewer.selectedKey = box.key;
  const [x0, y0, x1, y1] = box.box.length === 6 ? [box.box[0], box.box[1], box.box[3], box.box[4]] : box.box;
  renderSeriesControls();
  showImage().then(() => {
    const [u, v] = indexToPicture(currentSeries(), (x0 + x1) / 2, (y0 + y1) / 2);
    viewer.centreOn(u, v);
  });
  renderFindings();
}

function deleteBox(key, deleted = true) {
  const box = state.boxes.find((b) => b.key === key);
  if (!box || state.decided) return;
  if (box.source === "drawn" && deleted) {
    state.boxes = state.boxes.filter((b) => b.key !== key);
  } else {
    box.deleted = deleted;
  }
  if (viewer.selectedKey === key) viewer.selectedKey = null;
  redrawBoxes();
  toast(deleted ? "Box deleted: it will be sent as a correction." : "Box restored.");
}

function addDrawnBox(rect) {
  if (state.decided) return;
  const series = currentSeries();
  state.drawnCount += 1;
  const round = (v) => Math.round(v * 10) / 10;
  const [x0, y0] = pictureToIndex(series, rect[0], rect[1]).map(round);
  const [x1, y1] = pictureToIndex(series, rect[2], rect[3]).map(round);
  const box = series.isVolume ? [x0, y0, state.slice, x1, y1, state.slice] : [x0, y0, x1, y1];
  const key = `d${state.drawnCount}`;
  state.boxes.push({ key, source: "drawn", seriesId: series.id, seriesUid: series.uid, label: 0, score: null, box, boxWorld: [], deleted: false });
  viewer.selectedKey = key;
  redrawBoxes();
  toast("Box added: it will be sent as a correction.");
}

function boxesChanged() {
  return state.boxes.some((b) => b.deleted || b.source === "drawn");
}

/** The boxes the specialist endorses: the model's minus deleted ones, plus drawn ones. */
export function correctedBoxes() {
  return state.boxes.filter((b) => !b.deleted).map((b) => {
    const series = state.series.find((s) => boxOnSeries(b, s)) ?? currentSeries();
    const out = {
      box_index: b.box,
      label: b.label ?? 0,
      source: b.source === "model" ? "model" : "specialist",
      series_instance_uid: b.seriesUid ?? series.uid ?? undefined,
    };
    if (b.findingId != null) out.finding_id = b.findingId;
    return out;
  });
}

function setSlice(slice) {
  const series = currentSeries();
  if (!series.isVolume) return;
  const next = Math.min(series.slices - 1, Math.max(0, slice));
  if (next === state.slice) return;
  state.slice = next;
  els.slice.value = String(next);
  els.sliceLabel.textContent = `${next + 1} / ${series.slices}`;
  showImage();
}

function setPreset(preset) {
  const button = document.querySelector(`[data-preset="${preset}"]`);
  if (!button || button.disabled) return;
  state.preset = preset;
  renderSeriesControls();
  showImage();
}

function setDrawMode(on) {
  state.drawMode = on && !state.decided;
  els.drawMode.setAttribute("aria-pressed", String(state.drawMode));
  els.viewport.classList.toggle("draw", state.drawMode);
  els.viewport.classList.toggle("pan", !state.drawMode);
}

async function refreshClaimFromServer() {
  const study = await api(`/v1/studies/${encodeURIComponent(studyId)}`);
  state.study = { ...state.study, ...study };
  readClaim(study);
  renderClaim();
}

async function claim() {
  if (state.decided || state.claimedByMe) return true;
  try {
    const response = await api(`/v1/worklist/${encodeURIComponent(studyId)}/claim`, { method: "POST" });
    state.claimedByMe = true;
    state.claimedBy = pick(response || {}, "claimed_by_name", "claimed_by") ?? "you";
    renderClaim();
    toast("Case claimed.");
    return true;
  } catch (error) {
    els.error.textContent = error instanceof ApiError && error.status === 409
      ? `Someone else holds this case: ${error.message}`
      : `Could not claim: ${error.message}`;
    refreshClaimFromServer().catch(() => {});
    return false;
  }
}

async function release({ quiet = false, keepalive = false } = {}) {
  if (!state.claimedByMe || state.decided) return;
  try {
    if (keepalive) {
      // The page is going away: fetch with keepalive still carries the bearer token.
      fetch(`/v1/worklist/${encodeURIComponent(studyId)}/release`, {
        method: "POST", keepalive: true, headers: { Authorization: `Bearer ${getToken()}` },
      });
    } else {
      await api(`/v1/worklist/${encodeURIComponent(studyId)}/release`, { method: "POST" });
    }
    state.claimedByMe = false;
    state.claimedBy = null;
    renderClaim();
    if (!quiet) toast("Case released to the worklist.");
  } catch (error) {
    if (!quiet) els.error.textContent = `Could not release: ${error.message}`;
  }
}

function askDecision(decision) {
  if (state.decided) return;
  const button = document.querySelector(`[data-decision="${decision}"]`);
  if (button?.disabled) {
    els.error.textContent = state.claimedBy && !state.claimedByMe ? `Claimed by ${state.claimedBy}.` : "";
    return;
  }
  state.pendingDecision = decision;
  const corrections = boxesChanged() ? ", sending your box corrections" : "";
  const action = DECISION_ACTIONS[decision];
  els.confirmText.textContent = `${state.claimedByMe ? "" : "Claim this case and "}${state.claimedByMe ? action : action.toLowerCase()}${corrections}?`;
  els.decisionButtons.hidden = true;
  els.confirm.hidden = false;
  els.confirmYes.focus();
}

function cancelDecision() {
  state.pendingDecision = null;
  els.confirm.hidden = true;
  els.decisionButtons.hidden = false;
}

async function submitDecision() {
  const decision = state.pendingDecision;
  if (!decision) return;
  els.confirmYes.disabled = true;
  try {
    if (!(await claim())) return;
    const body = { decision, note: els.note.value.trim() };
    if (boxesChanged()) body.corrected_boxes = correctedBoxes();
    await api(`/v1/studies/${encodeURIComponent(studyId)}/review`, { method: "POST", body });
    state.decided = decision;
    state.claimedByMe = false;
    cancelDecision();
    setDrawMode(false);
    renderClaim();
    renderFindings();
    els.error.textContent = "";
    toast(`${decisionLabel(decision)}. Opening the next case…`);
    setTimeout(() => goToNeighbour(1, { afterDecision: true }), 1200);
  } catch (error) {
    els.error.textContent = `The decision was not saved: ${error.message}`;
  } finally {
    els.confirmYes.disabled = false;
  }
}

async function goToNeighbour(step, { afterDecision = false } = {}) {
  const queue = rememberedQueue();
  const index = queue.indexOf(studyId);
  let target;
  if (index >= 0) {
    target = queue[index + step];
    if (afterDecision && !target) target = queue[index - 1];
  } else {
    target = queue[0];
  }
  if (afterDecision) {
    // Keep j/k working over what is still waiting.
    sessionStorage.setItem("oncotriage.queue", JSON.stringify(queue.filter((id) => id !== studyId)));
  } else {
    await release({ quiet: true });
  }
  window.location.assign(target && target !== studyId ? `/ui/cases/${encodeURIComponent(target)}` : "/ui/worklist");
}

// ---------------------------------------------------------------- wiring

function onKey(event) {
  if (document.querySelector("dialog[open]")) return;
  if (!els.confirm.hidden) {
    if (event.key === "Enter") { event.preventDefault(); submitDecision(); return; }
    if (event.key === "Escape") { event.preventDefault(); cancelDecision(); return; }
  }
  if (event.key === "Escape" && isTyping(event)) { event.target.blur(); return; }
  if (isTyping(event) || hasModifier(event)) return;
  const series = currentSeries();
  const actions = {
    j: () => goToNeighbour(1),
    k: () => goToNeighbour(-1),
    c: () => claim(),
    Escape: () => (state.drawMode ? setDrawMode(false) : release()),
    r: () => askDecision("refer"),
    t: () => askDecision("return"),
    m: () => askDecision("more_imaging"),
    n: () => els.note.focus(),
    h: () => { els.showBoxes.checked = !els.showBoxes.checked; els.showBoxes.dispatchEvent(new Event("change")); },
    b: () => setDrawMode(!state.drawMode),
    1: () => setPreset("lung"),
    2: () => setPreset("mediastinum"),
    3: () => setPreset("bone"),
    0: () => setPreset("default"),
    "+": () => viewer.zoom(1.25),
    "=": () => viewer.zoom(1.25),
    "-": () => viewer.zoom(0.8),
    f: () => viewer.fit(),
    ArrowDown: () => series?.isVolume && setSlice(state.slice + 1),
    ArrowUp: () => series?.isVolume && setSlice(state.slice - 1),
    PageDown: () => series?.isVolume && setSlice(state.slice + 10),
    PageUp: () => series?.isVolume && setSlice(state.slice - 10),
    Delete: () => viewer.selectedKey && deleteBox(viewer.selectedKey),
    Backspace: () => viewer.selectedKey && deleteBox(viewer.selectedKey),
  };
  const action = actions[event.key];
  if (!action) return;
  // Arrow keys on the slider already move it; don't move twice.
  if (event.target === els.slice && event.key.startsWith("Arrow")) return;
  event.preventDefault();
  action();
}

function wire() {
  for (const button of document.querySelectorAll("[data-preset]")) {
    button.addEventListener("click", () => setPreset(button.dataset.preset));
  }
  els.slice.addEventListener("input", () => setSlice(Number(els.slice.value)));
  els.series.addEventListener("change", () => {
    state.seriesIndex = Number(els.series.value);
    state.slice = currentSeries().isVolume ? Math.floor(currentSeries().slices / 2) : 0;
    renderSeriesControls();
    viewer.fitted = false;
    showImage();
  });
  $("zoom-in").addEventListener("click", () => viewer.zoom(1.25));
  $("zoom-out").addEventListener("click", () => viewer.zoom(0.8));
  $("zoom-fit").addEventListener("click", () => viewer.fit());
  els.showBoxes.addEventListener("change", () => {
    viewer.showBoxes = els.showBoxes.checked;
    viewer.drawOverlay();
  });
  els.drawMode.addEventListener("click", () => setDrawMode(!state.drawMode));
  els.claimBtn.addEventListener("click", () => claim());
  els.releaseBtn.addEventListener("click", () => release());
  for (const button of document.querySelectorAll("[data-decision]")) {
    button.addEventListener("click", () => askDecision(button.dataset.decision));
  }
  els.confirmYes.addEventListener("click", submitDecision);
  els.confirmNo.addEventListener("click", cancelDecision);
  $("next-case").addEventListener("click", () => goToNeighbour(1));
  $("prev-case").addEventListener("click", () => goToNeighbour(-1));
  $("back-link").addEventListener("click", async (event) => {
    if (!state.claimedByMe) return;
    event.preventDefault();
    await release({ quiet: true });
    window.location.assign("/ui/worklist");
  });
  window.addEventListener("pagehide", () => release({ quiet: true, keepalive: true }));
  document.addEventListener("keydown", onKey);
  attachPointer(viewer, {
    isVolume: () => Boolean(currentSeries()?.isVolume),
    step: (delta) => setSlice(state.slice + delta),
    drawMode: () => state.drawMode,
    onDrawn: addDrawnBox,
    onSelect: (key) => { viewer.selectedKey = key; redrawBoxes(); },
  });
  setDrawMode(false);
}

if (requireSignIn("specialist")) {
  setupChrome();
  wire();
  loadStudy().catch((error) => {
    els.error.textContent = `Could not load this case: ${error.message}`;
    els.msg.textContent = "";
  });
}
