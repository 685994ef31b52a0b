// Image viewer: one image canvas and one overlay canvas, zoom and pan, boxes drawn on top.
//
// Coordinates: "image" coordinates are the source image's index space as the findings use it
// (x = column, y = row; a pixel (i, j) covers [i, i+1) x [j, j+1)); "view" coordinates are CSS
// pixels from the top-left corner of the viewport. view = image * scale + (tx, ty).

const MODEL_COLOUR = "#ffd400";
const DRAWN_COLOUR = "#00e5ff";
const SELECTED_COLOUR = "#ff4df0";
const MIN_SCALE = 0.05;
const MAX_SCALE = 40;

export class Viewer {
  /**
   * @param {HTMLElement} viewport container whose size the canvases follow
   * @param {HTMLCanvasElement} imageCanvas
   * @param {HTMLCanvasElement} overlayCanvas
   */
  constructor(viewport, imageCanvas, overlayCanvas) {
    this.viewport = viewport;
    this.imageCanvas = imageCanvas;
    this.overlayCanvas = overlayCanvas;
    this.image = null; // ImageBitmap or HTMLImageElement
    this.scale = 1;
    this.tx = 0;
    this.ty = 0;
    this.fitted = false;
    this.boxes = []; // {key, source: "model"|"drawn", score, rect: [x0, y0, x1, y1], label}
    this.showBoxes = true;
    this.selectedKey = null;
    this.draft = null; // rectangle being drawn, image coordinates
    this.onZoom = () => {};
    this.cssWidth = 0;
    this.cssHeight = 0;
    new ResizeObserver(() => this.resize()).observe(viewport);
    this.resize();
  }

  get dpr() { return window.devicePixelRatio || 1; }

  resize() {
    const rect = this.viewport.getBoundingClientRect();
    this.cssWidth = Math.max(1, Math.round(rect.width));
    this.cssHeight = Math.max(1, Math.round(rect.height));
    for (const canvas of [this.imageCanvas, this.overlayCanvas]) {
      canvas.width = Math.round(this.cssWidth * this.dpr);
      canvas.height = Math.round(this.cssHeight * this.dpr);
    }
    if (this.image && !this.userMoved) this.fit(); else this.draw();
  }

  /** Show a new image; keeps zoom and pan when its size is unchanged (slice scrolling). */
  setImage(image) {
    const sameSize = this.image && this.image.width === image.width && this.image.height === image.height;
    this.image = image;
    if (!sameSize || !this.fitted) this.fit(); else this.draw();
  }

  fit() {
    if (!this.image) return;
    const margin = 8;
    this.scale = Math.min(
      (this.cssWidth - 2 * margin) / this.image.width,
      (this.cssHeight - 2 * margin) / this.image.height,
    );
    this.scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.scale));
    this.tx = (this.cssWidth - this.image.width * this.scale) / 2;
    this.ty = (this.cssHeight - this.image.height * this.scale) / 2;
    this.fitted = true;
    this.userMoved = false;
    this.draw();
    this.onZoom(this.scale);
  }

  /** Zoom by `factor` keeping the view point (vx, vy) fixed; default the viewport centre. */
  zoom(factor, vx = this.cssWidth / 2, vy = this.cssHeight / 2) {
    const scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.scale * factor));
    const [ix, iy] = this.viewToImage(vx, vy);
    this.scale = scale;
    this.tx = vx - ix * scale;
    this.ty = vy - iy * scale;
    this.userMoved = true;
    this.draw();
    this.onZoom(this.scale);
  }

  pan(dx, dy) {
    this.tx += dx;
    this.ty += dy;
    this.userMoved = true;
    this.draw();
  }

  /** Centre the view on an image point (e.g. a finding). */
  centreOn(ix, iy) {
    this.tx = this.cssWidth / 2 - ix * this.scale;
    this.ty = this.cssHeight / 2 - iy * this.scale;
    this.userMoved = true;
    this.draw();
  }

  imageToView(ix, iy) { return [ix * this.scale + this.tx, iy * this.scale + this.ty]; }
  viewToImage(vx, vy) { return [(vx - this.tx) / this.scale, (vy - this.ty) / this.scale]; }

  /** Overlay canvas pixel (device pixels) of an image point: what getImageData is indexed by. */
  imageToCanvasPixel(ix, iy) {
    const [vx, vy] = this.imageToView(ix, iy);
    return [Math.round(vx * this.dpr), Math.round(vy * this.dpr)];
  }

  /** @param {Array} boxes boxes visible on the current image (already filtered by slice) */
  setBoxes(boxes) {
    this.boxes = boxes;
    this.drawOverlay();
  }

  /** The smallest visible box containing the image point, or null. */
  boxAt(ix, iy) {
    if (!this.showBoxes) return null;
    const tolerance = 4 / this.scale; // a few screen pixels around the edge
    let best = null;
    for (const box of this.boxes) {
      const [x0, y0, x1, y1] = box.rect;
      if (ix >= x0 - tolerance && ix <= x1 + tolerance && iy >= y0 - tolerance && iy <= y1 + tolerance) {
        const area = (x1 - x0) * (y1 - y0);
        if (!best || area < best.area) best = { box, area };
      }
    }
    return best ? best.box : null;
  }

  draw() {
    const ctx = this.imageCanvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.imageCanvas.width, this.imageCanvas.height);
    if (this.image) {
      ctx.setTransform(this.scale * this.dpr, 0, 0, this.scale * this.dpr, this.tx * this.dpr, this.ty * this.dpr);
      ctx.imageSmoothingEnabled = true;
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(this.image, 0, 0);
    }
    this.drawOverlay();
  }

  drawOverlay() {
    const ctx = this.overlayCanvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.overlayCanvas.width, this.overlayCanvas.height);
    if (!this.image) return;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    if (this.showBoxes) {
      for (const box of this.boxes) this.drawBox(ctx, box);
    }
    if (this.draft) {
      ctx.setLineDash([6, 4]);
      this.strokeRect(ctx, this.draft, DRAWN_COLOUR, 2);
      ctx.setLineDash([]);
    }
  }

  strokeRect(ctx, rect, colour, width) {
    const [x0, y0] = this.imageToView(rect[0], rect[1]);
    const [x1, y1] = this.imageToView(rect[2], rect[3]);
    // A dark halo under the colour keeps the edge visible on bright bone and on black air.
    ctx.lineWidth = width + 2;
    ctx.strokeStyle = "rgba(0,0,0,0.75)";
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.lineWidth = width;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    return [x0, y0, x1, y1];
  }

  drawBox(ctx, box) {
    const selected = box.key === this.selectedKey;
    const colour = selected ? SELECTED_COLOUR : box.source === "model" ? MODEL_COLOUR : DRAWN_COLOUR;
    const [x0, y0] = this.strokeRect(ctx, box.rect, colour, selected ? 3 : 2);
    const text = box.label;
    if (!text) return;
    ctx.font = "600 13px system-ui, 'DejaVu Sans', sans-serif";
    const width = ctx.measureText(text).width + 8;
    const top = y0 - 19 < 0 ? y0 + 2 : y0 - 19;
    ctx.fillStyle = "rgba(0,0,0,0.8)";
    ctx.fillRect(x0 - 1, top, width, 18);
    ctx.fillStyle = colour;
    ctx.fillText(text, x0 + 3, top + 13);
  }
}

/**
 * Mouse and wheel handling: pan by dragging, wheel for slices (volumes) or zoom, draw mode to
 * add a box, click to select a box.
 * @param {Viewer} viewer
 * @param {{isVolume: () => boolean, step: (delta: number) => void, drawMode: () => boolean,
 *          onDrawn: (rect: number[]) => void, onSelect: (key: string|null) => void}} hooks
 */
export function attachPointer(viewer, hooks) {
  const el = viewer.viewport;
  let drag = null;
  const local = (event) => {
    const rect = el.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  };
  const clampToImage = ([ix, iy]) => [
    Math.min(viewer.image.width, Math.max(0, ix)),
    Math.min(viewer.image.height, Math.max(0, iy)),
  ];
  el.addEventListener("pointerdown", (event) => {
    if (!viewer.image || event.button !== 0) return;
    el.setPointerCapture(event.pointerId);
    const [vx, vy] = local(event);
    drag = { vx, vy, lastX: vx, lastY: vy, moved: false, drawing: hooks.drawMode() };
    if (drag.drawing) {
      const [ix, iy] = clampToImage(viewer.viewToImage(vx, vy));
      drag.start = [ix, iy];
      viewer.draft = [ix, iy, ix, iy];
    } else {
      el.classList.add("panning");
    }
  });
  el.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const [vx, vy] = local(event);
    if (Math.abs(vx - drag.vx) + Math.abs(vy - drag.vy) > 3) drag.moved = true;
    if (drag.drawing) {
      const [ix, iy] = clampToImage(viewer.viewToImage(vx, vy));
      const [sx, sy] = drag.start;
      viewer.draft = [Math.min(sx, ix), Math.min(sy, iy), Math.max(sx, ix), Math.max(sy, iy)];
      viewer.drawOverlay();
    } else {
      viewer.pan(vx - drag.lastX, vy - drag.lastY);
    }
    drag.lastX = vx;
    drag.lastY = vy;
  });
  const end = (event) => {
    if (!drag) return;
    el.classList.remove("panning");
    const [vx, vy] = local(event);
    if (drag.drawing) {
      const rect = viewer.draft;
      viewer.draft = null;
      if (rect && (rect[2] - rect[0]) * viewer.scale >= 4 && (rect[3] - rect[1]) * viewer.scale >= 4) {
        hooks.onDrawn(rect.map((v) => Math.round(v * 10) / 10));
      } else {
        viewer.drawOverlay();
      }
    } else if (!drag.moved) {
      const [ix, iy] = viewer.viewToImage(vx, vy);
      hooks.onSelect(viewer.boxAt(ix, iy)?.key ?? null);
    }
    drag = null;
  };
  el.addEventListener("pointerup", end);
  el.addEventListener("pointercancel", end);
  el.addEventListener("wheel", (event) => {
    if (!viewer.image) return;
    event.preventDefault();
    const [vx, vy] = local(event);
    if (hooks.isVolume() && !event.ctrlKey) {
      hooks.step(event.deltaY > 0 ? 1 : -1);
    } else {
      viewer.zoom(event.deltaY > 0 ? 1 / 1.15 : 1.15, vx, vy);
    }
  }, { passive: false });
}
