// Trend plots with uPlot (from npm, api/web/package.json): one plot per measurement.
//
// What a plot shows, from the server's downsampled series (GET /patients/{id}/series: at most
// `points` buckets, each with n, min, max, mean, so a spike inside a bucket stays visible as
// its max):
// - the mean per bucket as the line, and the bucket's min-max as a band around it;
// - readings flagged unreliable (the series' `unreliable` buckets) as hollow grey dots, not
//   joined into the line: uPlot spans `undefined` values and breaks the line at `null`;
// - a real gap (longer than GAP_MIN or 20 buckets) breaks the line rather than drawing a
//   straight line across days without readings;
// - the patient's four limits as bands behind the data: red beyond the alert limits, yellow
//   between an alert and a warning limit; the personal baseline (median and its band) in blue;
// - the alerts of the period as vertical lines in their severity's colour.

const GAP_MIN_S = 36 * 3600;
const COLORS = {
  line: "#1f4e79",
  band: "rgba(31, 78, 121, 0.18)",
  unreliable: "#6b6b6b",
  red: "rgba(198, 40, 40, 0.13)",
  yellow: "rgba(249, 168, 37, 0.18)",
  baseline: "rgba(2, 119, 189, 0.14)",
  baselineLine: "rgba(2, 119, 189, 0.7)",
  marker: { red: "#b71c1c", yellow: "#b26a00", blue: "#0d47a1" },
};

function seconds(iso) {
  return Math.round(new Date(iso).getTime() / 1000);
}

// One measurement's plot data from its series (GET /patients/{id}/series): uPlot's columns
// [xs, mean, min, max, unreliable] and the count of readings they stand for. On the time axis
// xs a reliable bucket has its mean, min and max; an unreliable bucket's time has `undefined`
// there (spanned: the line goes past it) and its mean in the last column; a gap longer than
// GAP_MIN_S or 20 buckets gets a time of its own with `null` (the line stops).
export function plotData(series) {
  const gapS = Math.max(GAP_MIN_S, 20 * Math.max(series.bucket_s, 1));
  const rows = new Map(); // time -> [mean, min, max, unreliable]
  let n = 0;
  let prev = null;
  for (const b of series.buckets) {
    const t = seconds(b.bucket);
    if (prev !== null && t - prev > gapS) rows.set(prev + 1, [null, null, null, undefined]);
    rows.set(t, [b.mean, b.min, b.max, undefined]);
    prev = t;
    n += b.n;
  }
  for (const u of series.unreliable || []) {
    const t = seconds(u.bucket);
    const row = rows.get(t) || [undefined, undefined, undefined, undefined];
    row[3] = u.mean;
    rows.set(t, row);
    n += u.n;
  }
  const xs = [...rows.keys()].sort((a, b) => a - b);
  const data = [xs, ...[0, 1, 2, 3].map((i) => xs.map((x) => rows.get(x)[i]))];
  return { data, n };
}

function fillBand(u, ctx, y0, y1, color) {
  if (y0 === null || y1 === null || y0 === undefined || y1 === undefined) return;
  const top = u.valToPos(Math.max(y0, y1), "y", true);
  const bottom = u.valToPos(Math.min(y0, y1), "y", true);
  const { left, width, top: pTop, height } = u.bbox;
  const a = Math.max(pTop, Math.min(top, pTop + height));
  const b = Math.max(pTop, Math.min(bottom, pTop + height));
  if (b <= a) return;
  ctx.fillStyle = color;
  ctx.fillRect(left, a, width, b - a);
}

function drawLimits(u, limits, baseline) {
  const ctx = u.ctx;
  const sc = u.scales.y;
  ctx.save();
  if (limits) {
    const { alert_low: al, warn_low: wl, warn_high: wh, alert_high: ah } = limits;
    if (al !== null) fillBand(u, ctx, sc.min, al, COLORS.red);
    if (wl !== null) fillBand(u, ctx, al ?? sc.min, wl, COLORS.yellow);
    if (wh !== null) fillBand(u, ctx, wh, ah ?? sc.max, COLORS.yellow);
    if (ah !== null) fillBand(u, ctx, ah, sc.max, COLORS.red);
  }
  if (baseline) {
    fillBand(u, ctx, baseline.low, baseline.high, COLORS.baseline);
    const y = u.valToPos(baseline.median, "y", true);
    ctx.strokeStyle = COLORS.baselineLine;
    ctx.setLineDash([6, 4]);
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.moveTo(u.bbox.left, y);
    ctx.lineTo(u.bbox.left + u.bbox.width, y);
    ctx.stroke();
  }
  ctx.restore();
}

function drawMarkers(u, alerts) {
  const ctx = u.ctx;
  ctx.save();
  ctx.lineWidth = 2;
  for (const a of alerts) {
    const x = u.valToPos(seconds(a.measured_at || a.opened_at), "x", true);
    if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
    ctx.strokeStyle = COLORS.marker[a.severity] || COLORS.marker.blue;
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
    ctx.fillStyle = ctx.strokeStyle;
    ctx.beginPath();
    ctx.moveTo(x - 6, u.bbox.top);
    ctx.lineTo(x + 6, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + 9);
    ctx.fill();
  }
  ctx.restore();
}

// The y range: the data and the warning limits in view, so the bands always show.
function yRange(data, limits, baseline) {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 1; i < data.length; i++) {
    for (const v of data[i]) {
      if (v === null || v === undefined) continue;
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  }
  const extra = [limits?.warn_low, limits?.warn_high, baseline?.low, baseline?.high].filter((v) => v !== null && v !== undefined);
  for (const v of extra) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  if (!isFinite(lo)) return [0, 1];
  const pad = Math.max((hi - lo) * 0.12, 1);
  return [lo - pad, hi + pad];
}

// A plot in `el` of one measurement's plotData(). `spec`: {label, unit, limits, baseline,
// alerts, window, onZoom(since, until)}. Returns the uPlot instance.
export function trendPlot(el, { data }, spec) {
  const value = (u, v) => (v == null ? "–" : `${v.toFixed(1)} ${spec.unit}`);
  const lines = [
    { label: spec.label, stroke: COLORS.line, width: 2, spanGaps: false, points: { show: (u, si, i0, i1) => i1 - i0 < 60, size: 5 }, value },
    // The min and max series only carry the band between them: out of the legend.
    { label: `${spec.label} min`, stroke: "transparent", spanGaps: false, points: { show: false }, legend: false },
    { label: `${spec.label} max`, stroke: "transparent", spanGaps: false, points: { show: false }, legend: false },
    {
      label: spec.unreliableLabel,
      stroke: COLORS.unreliable,
      paths: () => null,
      points: { show: true, size: 7, width: 1.5, stroke: COLORS.unreliable, fill: "#ffffff" },
      value,
    },
  ];
  const bands = [{ series: [3, 2], fill: COLORS.band }];
  const width = Math.max(280, el.clientWidth);
  const opts = {
    width,
    height: spec.height || 200,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Europe/Copenhagen"),
    scales: {
      x: { time: true, range: () => [Math.round(new Date(spec.window.since) / 1000), Math.round(new Date(spec.window.until) / 1000)] },
      y: { range: () => yRange(data, spec.limits, spec.baseline) },
    },
    series: [{ label: spec.timeLabel, value: (u, v) => (v == null ? "–" : spec.formatTime(v, true)) }, ...lines],
    bands,
    axes: [
      {
        stroke: "#222",
        grid: { stroke: "#e3e3e3" },
        // Danish wall-clock labels: hours within two days, dates beyond
        values: (u, splits) => {
          const span = u.scales.x.max - u.scales.x.min;
          return splits.map((v) => spec.formatTime(v, span > 2 * 86400 ? "date" : "time"));
        },
      },
      { stroke: "#222", grid: { stroke: "#e3e3e3" }, size: 50 },
    ],
    legend: { show: true, live: true },
    cursor: { drag: { x: true, y: false, setScale: false } },
    hooks: {
      drawClear: [(u) => drawLimits(u, spec.limits, spec.baseline)],
      draw: [(u) => drawMarkers(u, spec.alerts || [])],
      setSelect: [
        (u) => {
          if (u.select.width < 8 || !spec.onZoom) return;
          const since = new Date(u.posToVal(u.select.left, "x") * 1000);
          const until = new Date(u.posToVal(u.select.left + u.select.width, "x") * 1000);
          u.setSelect({ left: 0, width: 0 }, false);
          spec.onZoom(since, until);
        },
      ],
    },
  };
  const plot = new uPlot(opts, data, el);
  const rows = plot.root.querySelectorAll(".u-legend .u-series");
  for (const j of [2, 3]) rows[j]?.classList.add("band-edge");
  return plot;
}
