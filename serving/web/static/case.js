// The case view: the study's image with the model's boxes, claim/release, the decision.
import {
  ApiError, api, config, decisionLabel, formatDuration, formatScore, formatTime, getToken,
  hasModifier, isTyping, minutesSince, priorityBadge, rememberedQueue,
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

/** Claims are leases (15 min by default); renew well before they lapse. */
const RENEW_CLAIM_MS = 4 * 60 * 1000;

const studyId = config.study_id;
// This tab holds the claim: set on claim, cleared on an explicit release or a decision. The
// page releases its claim when it goes away (pagehide); coming back by reload or history in
// the same tab claims the case again, unless someone else took it meanwhile.
const HELD_KEY = `oncotriage.claim.${studyId}`;
const $ = (id) => document.getElementById(id);
const els = {
  viewport: $("viewport"), msg: $("viewport-msg"), slice: $("slice"), sliceLabel: $("slice-label"),
  sliceGroup: $("slice-group"), series: $("series"), seriesGroup: $("series-group"),
  zoomLabel: $("zoom-label"), showBoxes: $("show-boxes"), drawMode: $("draw-mode"),
  title: $("case-title"), priority: $("case-priority"), facts: $("case-facts"), error: $("case-error"),
  findings: $("findings-list"), findingsHidden: $("findings-hidden"), claimState: $("claim-state"), claimBtn: $("claim-btn"),
  releaseBtn: $("release-btn"), note: $("note"), confirm: $("confirm"), confirmText: $("confirm-text"),
  decisionButtons: document.querySelector(".decision-buttons"),
  confirmYes: $("confirm-yes"), confirmNo: $("confirm-no"), decisionState: $("decision-state"),
};

const state = {
  study: null,
  series: [], // {uid, modality, isVolume, frames, cols, rows, images}
  seriesIndex: 0,
  preset: "default",
  slice: 0, // the slice of a volume, or the image of a radiograph series
  boxes: [], // {key, source, findingId, seriesUid, sopUid, score, box: [...], deleted}
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

/**
 * A series from `/ui-api/studies/{id}/viewer`. A volume steps through slices (axis 2); a
 * radiograph series steps through its images (one or more instances). `frames` counts either.
 */
function normaliseSeries(raw) {
  const isVolume = Boolean(raw.is_volume);
  const images = (raw.images || []).map((image) => ({
    sopUid: image.sop_instance_uid, cols: image.columns, rows: image.rows,
  }));
  return {
    uid: raw.series_instance_uid,
    modality: raw.modality || state.study?.modality || "",
    isVolume,
    frames: isVolume ? Math.max(1, raw.slices || 1) : Math.max(1, images.length),
    cols: raw.columns || null,
    rows: raw.rows || null,
    images,
  };
}

function normaliseFinding(raw, index) {
  return {
    key: `m${raw.id ?? index}`,
    source: "model",
    findingId: raw.id,
    seriesUid: raw.series_instance_uid,
    sopUid: raw.sop_instance_uid ?? null,
    label: raw.label ?? 0,
    // the study score's scale (the model's score calibration), as the worklist and the
    // thresholds use; the detector's raw score only for results from before it was kept
    score: raw.calibrated_score ?? raw.score,
    box: (raw.box_index || []).map(Number),
    boxWorld: (raw.box_world || []).map(Number),
    approximateMm: Boolean(raw.approximate_mm),
    deleted: false,
  };
}

function currentSeries() { return state.series[state.seriesIndex]; }

/** The radiograph shown now (null for volumes). */
function currentImage(series = currentSeries()) {
  return series && !series.isVolume ? series.images[state.slice] ?? series.images[0] ?? null : null;
}

function boxOnSeries(box, series) {
  return !box.seriesUid || !series.uid || box.seriesUid === series.uid;
}

/** Whether a box belongs to the picture on screen: its series, and its image or slice. */
function boxOnScreen(box) {
  const series = currentSeries();
  if (!series || box.deleted || !boxOnSeries(box, series)) return false;
  if (box.box.length === 6) return onSlice(box.box, state.slice);
  const image = currentImage(series);
  return !box.sopUid || !image || box.sopUid === image.sopUid;
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
 * Index space (voxel centres at integers) -> displayed-picture coordinates (a pixel covers
 * [u, u+1)). The server may resample the picture (square pixels, longest side capped), so the
 * factor is the picture's size over the source's columns and rows.
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
  const source = currentImage(series) ?? series;
  if (!image || !source?.cols || !source?.rows) return [1, 1];
  return [image.width / source.cols, image.height / source.rows];
}

/** Boxes on the picture on screen, as viewer rectangles in picture coordinates. */
function visibleBoxes() {
  const series = currentSeries();
  if (!series) return [];
  return state.boxes.filter(boxOnScreen).map((b) => {
    const [x0, y0, x1, y1] = b.box.length === 6 ? [b.box[0], b.box[1], b.box[3], b.box[4]] : b.box;
    return {
      key: b.key,
      source: b.source,
      rect: [...indexToPicture(series, x0, y0), ...indexToPicture(series, x1, y1)],
      label: b.source === "model" ? formatScore(b.score) : "added",
    };
  });
}

/** Put the series and slice/image of a box on screen (without loading). */
function focusBox(box) {
  const index = state.series.findIndex((s) => boxOnSeries(box, s));
  if (index >= 0) state.seriesIndex = index;
  const series = currentSeries();
  if (box.box.length === 6) state.slice = centreSlice(box.box);
  else if (box.sopUid) state.slice = Math.max(0, series.images.findIndex((i) => i.sopUid === box.sopUid));
}

async function loadStudy() {
  const id = encodeURIComponent(studyId);
  const [study, result, info] = await Promise.all([
    api(`/v1/studies/${id}`),
    api(`/v1/studies/${id}/result`),
    api(`/ui-api/studies/${id}/viewer`),
  ]);
  state.study = { ...result, ...study };
  state.series = info.series.map(normaliseSeries);
  if (!state.series.length) throw new Error("this study has no images yet");
  // The model's findings at or above its operating threshold; the candidates below it (a 3D
  // detector keeps up to a few hundred for evaluation) are neither shown nor endorsed.
  const findings = result.findings || [];
  const shown = findings.filter((f) => f.reportable !== false);
  state.boxes = shown.map(normaliseFinding).sort((a, b) => b.score - a.score);
  const below = findings.length - shown.length;
  els.findingsHidden.hidden = below === 0;
  els.findingsHidden.textContent = below
    ? `${below} candidate box${below === 1 ? "" : "es"} below the model's operating threshold ${below === 1 ? "is" : "are"} not shown.`
    : "";
  readClaim(info.claim);
  state.decided = study.review_status === "decided" ? study.decision : null;
  await reclaimAfterReload();
  renderFacts();
  renderFindings();
  renderClaim();
  // Start on the highest-scoring finding; a volume without one on its middle slice.
  const top = [...state.boxes].sort((a, b) => (b.score ?? 0) - (a.score ?? 0))[0];
  if (top) focusBox(top);
  else if (currentSeries().isVolume) state.slice = Math.floor(currentSeries().frames / 2);
  renderSeriesControls();
  await showImage();
  if (!state.decided) state.renewTimer = setInterval(renewClaim, RENEW_CLAIM_MS);
}

/** Reload (or back/forward) of a case this tab held: claim it again, quietly. */
async function reclaimAfterReload() {
  if (!sessionStorage.getItem(HELD_KEY)) return;
  const navigation = performance.getEntriesByType("navigation")[0];
  const returning = navigation && ["reload", "back_forward"].includes(navigation.type);
  const someoneElse = Boolean(state.claimedBy) && !state.claimedByMe;
  if (state.decided || someoneElse || !returning) {
    sessionStorage.removeItem(HELD_KEY);
    return;
  }
  // Also when the server still shows it as ours: the release sent as the page went away may
  // arrive after this page loaded, and claiming again renews the lease either way.
  state.claimedByMe = false;
  await claim({ quiet: true });
}

function readClaim(claim) {
  state.claimedBy = claim?.claimed_by ?? null;
  state.claimedByMe = Boolean(claim?.claimed_by_me);
}

function imageUrl(series, frame, preset) {
  const params = new URLSearchParams({ series: series.uid });
  if (series.isVolume) params.set("slice", String(frame));
  else if (series.images[frame]) params.set("instance", series.images[frame].sopUid);
  if (WINDOW_PRESETS[preset]) params.set("window", preset);
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
    for (const s of [state.slice + 1, state.slice - 1]) {
      if (s >= 0 && s < series.frames) fetchImage(imageUrl(series, s, state.preset)).catch(() => {});
    }
  } catch (error) {
    if (seq !== state.imageSeq) return;
    els.msg.textContent = `Could not load the image: ${error.message}`;
  }
}

function describeImage(series) {
  const unit = series.isVolume ? "slice" : "image";
  const where = series.frames > 1 ? `, ${unit} ${state.slice + 1} of ${series.frames}` : "";
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
  const badge = priorityBadge(s.priority);
  badge.id = "case-priority";
  els.priority.replaceWith(badge);
  els.priority = badge;
  els.facts.replaceChildren();
  fact("Hospital", s.hospital?.name);
  fact("Modality", s.modality);
  fact("Received", formatTime(s.received_at));
  fact("Waiting", formatDuration(minutesSince(s.triaged_at ?? s.received_at)));
  fact("Score", formatScore(s.suspicion_score));
  fact("Model", [s.model_name, s.model_version].filter(Boolean).join(" v") || "—");
  fact("Status", s.status);
  if (s.failure_reason) fact("Why flagged", s.failure_reason);
  const uid = document.createElement("span");
  uid.className = "mono";
  uid.textContent = s.study_instance_uid ?? studyId;
  fact("Study UID", uid);
}

function renderSeriesControls() {
  const series = currentSeries();
  els.seriesGroup.hidden = state.series.length < 2;
  if (state.series.length > 1 && els.series.options.length !== state.series.length) {
    els.series.replaceChildren(...state.series.map((s, i) => {
      const unit = s.isVolume ? "slice" : "image";
      return new Option(`${i + 1}: ${s.modality} (${s.frames} ${unit}${s.frames === 1 ? "" : "s"})`, String(i));
    }));
  }
  els.series.value = String(state.seriesIndex);
  els.sliceGroup.hidden = series.frames < 2;
  els.sliceGroup.querySelector("label").textContent = series.isVolume ? "Slice" : "Image";
  els.slice.max = String(series.frames - 1);
  state.slice = Math.min(Math.max(0, state.slice), series.frames - 1);
  els.slice.value = String(state.slice);
  els.sliceLabel.textContent = `${state.slice + 1} / ${series.frames}`;
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
  // No pixel spacing in the image: millimetres come from an assumed field of view.
  if (size && box.approximateMm) size = size.replace(" · ", " · ≈") + " (spacing estimated)";
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
  focusBox(box);
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
  const sopUid = currentImage(series)?.sopUid ?? null;
  state.boxes.push({ key, source: "drawn", seriesUid: series.uid, sopUid, label: 0, score: null, box, boxWorld: [], deleted: false });
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
    const out = { series_instance_uid: b.seriesUid, box_index: b.box, label: b.label ?? 0 };
    if (b.sopUid) out.sop_instance_uid = b.sopUid;
    return out;
  });
}

function setSlice(slice) {
  const series = currentSeries();
  if (series.frames < 2) return;
  const next = Math.min(series.frames - 1, Math.max(0, slice));
  if (next === state.slice) return;
  state.slice = next;
  els.slice.value = String(next);
  els.sliceLabel.textContent = `${next + 1} / ${series.frames}`;
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
  const info = await api(`/ui-api/studies/${encodeURIComponent(studyId)}/viewer`);
  readClaim(info.claim);
  renderClaim();
}

/** Claiming again renews the lease, so an open case does not slip back to the queue. */
async function renewClaim() {
  if (!state.claimedByMe || state.decided || document.hidden) return;
  try {
    await api(`/v1/worklist/${encodeURIComponent(studyId)}/claim`, { method: "POST" });
  } catch (error) {
    state.claimedByMe = false;
    refreshClaimFromServer().catch(() => {});
    els.error.textContent = `Your claim could not be renewed: ${error.message}`;
  }
}

async function claim({ quiet = false } = {}) {
  if (state.decided || state.claimedByMe) return true;
  try {
    const response = await api(`/v1/worklist/${encodeURIComponent(studyId)}/claim`, { method: "POST" });
    state.claimedByMe = true;
    state.claimedBy = response?.claimed_by ?? "you";
    sessionStorage.setItem(HELD_KEY, "1");
    renderClaim();
    if (!quiet) toast("Case claimed.");
    return true;
  } catch (error) {
    sessionStorage.removeItem(HELD_KEY);
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
      sessionStorage.removeItem(HELD_KEY);  // let go on purpose: a reload does not take it back
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
    sessionStorage.removeItem(HELD_KEY);
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
    ArrowDown: () => setSlice(state.slice + 1),
    ArrowUp: () => setSlice(state.slice - 1),
    PageDown: () => setSlice(state.slice + 10),
    PageUp: () => setSlice(state.slice - 10),
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
    state.slice = currentSeries().isVolume ? Math.floor(currentSeries().frames / 2) : 0;
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
