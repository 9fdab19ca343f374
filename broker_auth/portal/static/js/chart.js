// A small time-series chart drawn on a <canvas>: the last `spanMs` of every series, shared
// y axis, time on x. Averages are drawn as steps held until now (they change every few
// seconds, and a single retained value should still show as a line); raw readings as lines.
const MAX_POINTS = 2000;

export class LiveChart {
  constructor(canvas, { spanMs = 120_000 } = {}) {
    this.canvas = canvas;
    this.spanMs = spanMs;
    this.series = new Map();
    this.pending = false;
    new ResizeObserver(() => this.requestDraw()).observe(canvas);
    // Keep the time axis moving even when no message arrives.
    setInterval(() => this.requestDraw(), 1000);
  }

  ensureSeries(key, { label, color, step }) {
    if (!this.series.has(key)) this.series.set(key, { label, color, step, points: [] });
    return this.series.get(key);
  }

  add(key, t, value) {
    const s = this.series.get(key);
    if (!s) return;
    s.points.push({ t, v: value });
    s.points.sort((a, b) => a.t - b.t);
    if (s.points.length > MAX_POINTS) s.points.splice(0, s.points.length - MAX_POINTS);
    this.requestDraw();
  }

  clear() {
    this.series.clear();
    this.requestDraw();
  }

  requestDraw() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const canvas = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || canvas.width;
    const cssH = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
      canvas.width = Math.round(cssW * dpr);
      canvas.height = Math.round(cssH * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);

    const style = getComputedStyle(canvas);
    const text = style.getPropertyValue("--text").trim() || "#222";
    const muted = style.getPropertyValue("--muted").trim() || "#666";
    const grid = style.getPropertyValue("--border").trim() || "#ddd";
    const font = `12px ${style.fontFamily}`;

    const now = Date.now();
    const t0 = now - this.spanMs;
    const visible = [];
    for (const s of this.series.values()) {
      // Keep the last point before the window so step lines enter from the left edge.
      const firstIn = s.points.findIndex((p) => p.t >= t0);
      const from = firstIn === -1 ? s.points.length - 1 : Math.max(0, firstIn - 1);
      const pts = from < 0 ? [] : s.points.slice(from);
      visible.push({ ...s, pts });
    }
    const values = visible.flatMap((s) => s.pts.map((p) => p.v));
    const pad = { left: 64, right: 16, top: 14, bottom: 26 };
    const w = cssW - pad.left - pad.right;
    const h = cssH - pad.top - pad.bottom;
    ctx.font = font;

    if (values.length === 0) {
      ctx.fillStyle = muted;
      ctx.textAlign = "center";
      ctx.fillText("Waiting for data…", cssW / 2, cssH / 2);
      return;
    }
    let [lo, hi] = [Math.min(...values), Math.max(...values)];
    if (hi - lo < 1e-9) {
      const d = Math.abs(hi) * 0.05 || 1;
      lo -= d;
      hi += d;
    }
    const margin = (hi - lo) * 0.08;
    lo -= margin;
    hi += margin;
    const x = (t) => pad.left + ((t - t0) / this.spanMs) * w;
    const y = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * h;

    // Grid and axis labels.
    ctx.strokeStyle = grid;
    ctx.lineWidth = 1;
    ctx.fillStyle = muted;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const v of niceTicks(lo, hi, 5)) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.left, yy);
      ctx.lineTo(pad.left + w, yy);
      ctx.stroke();
      ctx.fillText(formatNumber(v), pad.left - 6, yy);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const stepMs = 30_000;
    for (let t = Math.ceil(t0 / stepMs) * stepMs; t <= now; t += stepMs) {
      const xx = Math.round(x(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(xx, pad.top);
      ctx.lineTo(xx, pad.top + h);
      ctx.stroke();
      ctx.fillText(new Date(t).toLocaleTimeString([], { hour12: false }), xx, pad.top + h + 6);
    }

    ctx.save();
    ctx.beginPath();
    ctx.rect(pad.left, pad.top, w, h);
    ctx.clip();
    for (const s of visible) {
      if (s.pts.length === 0) continue;
      ctx.strokeStyle = s.color;
      ctx.fillStyle = s.color;
      ctx.lineWidth = s.step ? 2.5 : 1.5;
      ctx.beginPath();
      s.pts.forEach((p, i) => {
        if (i === 0) ctx.moveTo(x(p.t), y(p.v));
        else if (s.step) {
          ctx.lineTo(x(p.t), y(s.pts[i - 1].v));
          ctx.lineTo(x(p.t), y(p.v));
        } else ctx.lineTo(x(p.t), y(p.v));
      });
      if (s.step) ctx.lineTo(x(now), y(s.pts[s.pts.length - 1].v));
      ctx.stroke();
      for (const p of s.step ? s.pts : s.pts.slice(-1)) {
        ctx.beginPath();
        ctx.arc(x(p.t), y(p.v), 3, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    ctx.restore();

    // Legend, top left inside the plot.
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    let lx = pad.left + 8;
    for (const s of visible) {
      ctx.fillStyle = s.color;
      ctx.fillRect(lx, pad.top + 6, 10, 10);
      ctx.fillStyle = text;
      ctx.fillText(s.label, lx + 14, pad.top + 11);
      lx += ctx.measureText(s.label).width + 32;
    }
  }
}

function niceTicks(lo, hi, count) {
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) ticks.push(v);
  return ticks;
}

export function formatNumber(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return v.toLocaleString(undefined, { maximumFractionDigits: a >= 100 ? 1 : 3 });
}
