// One patient: who and who is responsible, the active alerts with their actions and the ISBAR
// text to read out on the phone, the trend plots (24 hours to 6 months, or a dragged part of
// one), the latest readings with device and quality, and the limits with their history
// (a physician edits them, with a reason).

import { alertButtons } from "./actions.js";
import { api, query } from "./api.js";
import { plotData, trendPlot } from "./charts.js";
import { announce, ask, clear, h } from "./dom.js";
import { EventStream } from "./stream.js";
import { currentLang, has, localTime, num, plotTime, t, unitText } from "./i18n.js";
import { doctorText, groupText, severityBadge } from "./triage.js";

const RANGES = [
  ["24h", 1],
  ["7d", 7],
  ["30d", 30],
  ["90d", 90],
  ["180d", 180],
];
// One plot per measurement. Systolic and diastolic are apart, not in one plot: each pressure
// has its own limits, and the systolic's bands behind the diastolic line would show it in the red.
const PANELS = [
  { kind: "spo2", unit: "%" },
  { kind: "pulse", unit: "/min" },
  { kind: "bp_systolic", unit: "mmHg" },
  { kind: "bp_diastolic", unit: "mmHg" },
  { kind: "weight", unit: "kg" },
  { kind: "temperature", unit: "°C", optional: true },
];
const LIMIT_FIELDS = ["alert_low", "warn_low", "warn_high", "alert_high"];
const ACTIVE = ["open", "acknowledged", "snoozed"];
const DAY_MS = 86400000;

function kindName(k) {
  return t(`kind.${k}`);
}

function flagsText(flags) {
  if (!flags || !flags.length) return t("flags.none");
  return flags.map((f) => (has(`flag.${f}`) ? t(`flag.${f}`) : f.replaceAll("_", " "))).join(", ");
}

function limitsText(l) {
  if (!l) return "–";
  return LIMIT_FIELDS.map((f) => num(l[f])).join(" / ");
}

export class PatientScreen {
  constructor(main, bus, patientId, me) {
    this.main = main;
    this.bus = bus;
    this.id = patientId;
    this.me = me;
    // the nurse's last choice of period, on this tablet
    const saved = localStorage.getItem("vv.range");
    this.range = RANGES.some(([k]) => k === saved) ? saved : "7d";
    this.window = null;
    this.plots = [];
  }

  path(rest = "") {
    return `/patients/${encodeURIComponent(this.id)}${rest}`;
  }

  async mount() {
    clear(this.main);
    let patient;
    try {
      patient = await api(this.path());
    } catch (e) {
      if (e.status === 404 || e.status === 422) {
        this.main.append(h("h1", {}, t("patient.title", { p: this.id })), h("p", { class: "notfound", role: "alert" }, t("patient.notfound")));
        return;
      }
      throw e;
    }
    this.patient = patient;
    this.alertsBox = h("section", { class: "card", "aria-labelledby": "h-alerts" });
    this.plotsBox = h("div", { class: "plots" });
    this.rangeBox = h("div", { class: "ranges", role: "group", "aria-label": t("patient.range") });
    this.latestBox = h("section", { class: "card", "aria-labelledby": "h-latest" });
    this.limitsBox = h("section", { class: "card", "aria-labelledby": "h-limits" });
    this.main.append(
      h("p", {}, h("a", { href: "#/alerts" }, `← ${t("patient.back")}`)),
      h("h1", {}, t("patient.title", { p: patient.id }), " ", severityBadge(patient.status)),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, t("col.patient")),
        h("dd", {}, groupText(patient.group)),
        h("dt", {}, t("patient.team")),
        h("dd", {}, patient.team),
        h("dt", {}, t("patient.gp")),
        h("dd", {}, patient.gp_name || "–"),
        h("dt", {}, t("patient.gateway")),
        h("dd", {}, patient.gateway_id ? `${patient.gateway_id}, ${t("patient.lastseen").toLowerCase()} ${localTime(patient.gateway_last_seen)}` : "–"),
      ),
      this.alertsBox,
      h(
        "section",
        { class: "card", "aria-labelledby": "h-trends" },
        h("h2", { id: "h-trends" }, t("patient.trends")),
        this.rangeBox,
        h("p", { class: "legend-text" }, t("chart.legend")),
        this.plotsBox,
      ),
      this.latestBox,
      this.limitsBox,
    );
    this.renderLatest(patient.latest || []);
    this.unsubscribe = this.bus.on("alert", (ev) => {
      if (ev.patient_id === this.id) this.refreshAlerts();
    });
    this.onResize = () => {
      for (const { plot, el } of this.plots) plot.setSize({ width: Math.max(280, el.clientWidth), height: plot.height });
    };
    window.addEventListener("resize", this.onResize);
    await Promise.all([this.loadLimits(), this.refreshAlerts(false)]);
    await this.load(this.range);
    // New readings as they are stored (the nurse asked for a new measurement): the latest
    // readings and, unless she has zoomed into the past or has her finger on a plot, the plots.
    this.plotsBox.addEventListener("pointerdown", () => (this.touching = true));
    window.addEventListener("pointerup", (this.onPointerUp = () => (this.touching = false)));
    this.readings = new EventStream({
      path: this.path("/readings/stream"),
      event: "readings",
      onEvent: () =>
        this.readingsArrived().catch((e) => {
          if (e.status !== 401 && !this.readings.stopped) announce(t("error.generic", { m: e.message }), "error");
        }),
      onState: () => {},
    });
    this.readings.start();
  }

  async readingsArrived() {
    if (this.refreshing) {
      this.again = true; // one more refresh when this one is done
      return;
    }
    this.refreshing = true;
    try {
      do {
        if (this.readings.stopped) return; // the nurse has left the page
        this.again = false;
        const patient = await api(this.path());
        this.renderLatest(patient.latest || []);
        if (this.range !== "zoom" && !this.touching) await this.load(this.range);
        this.latestBox.dataset.refreshed = String(Date.now()); // for the end-to-end tests
        // Said to a screen reader, not shown as a toast: the table is what changed, and a
        // toast over the alert's buttons would take the tap meant for them.
        this.latestBox.append(h("p", { class: "visually-hidden", role: "status" }, t("patient.newreadings")));
      } while (this.again);
    } finally {
      this.refreshing = false;
    }
  }

  unmount() {
    this.readings?.stop();
    window.removeEventListener("pointerup", this.onPointerUp);
    this.unsubscribe?.();
    window.removeEventListener("resize", this.onResize);
    for (const { plot } of this.plots) plot.destroy();
    this.plots = [];
  }

  async refreshAlerts(replot = true) {
    const active = await api(`/alerts${query({ patient: this.id, state: ACTIVE, lang: currentLang() })}`);
    this.active = active;
    clear(this.alertsBox).append(h("h2", { id: "h-alerts" }, t("patient.alerts")));
    if (!active.length) this.alertsBox.append(h("p", {}, t("patient.noalerts")));
    const list = h("ul", { class: "patient-alerts" });
    for (const [i, a] of active.entries()) {
      const isbar = h("pre", { class: "isbar", id: `isbar-${a.id}`, hidden: true, tabindex: 0 });
      const show = h("button", { type: "button", class: "secondary", "aria-expanded": "false", "aria-controls": isbar.id, onclick: () => this.toggleIsbar(a, isbar, show) }, t("patient.isbar.show"));
      list.append(
        h(
          "li",
          { class: "patient-alert", dataset: { alertId: a.id, state: a.state } },
          h("div", { class: "line" }, severityBadge(a.severity), " ", h("strong", {}, a.headline)),
          // The engine's own text is English; in Danish the ISBAR text below says what to do.
          currentLang() === "en" ? h("div", { class: "sub" }, a.message) : null,
          h("div", { class: "sub" }, `${t(`state.${a.state}`)} · ${localTime(a.opened_at)} · ${t("col.doctor")}: ${doctorText(a.responsible_doctor)}`),
          h("div", { class: "line" }, alertButtons(a, () => this.refreshAlerts(), { withNote: true }), show),
          isbar,
        ),
      );
      if (i === 0) this.toggleIsbar(a, isbar, show); // the worst one ready to read out
    }
    this.alertsBox.append(list);
    if (replot && this.window) await this.load(this.range, this.window);
  }

  async toggleIsbar(alert, pre, button) {
    if (!pre.hidden) {
      pre.hidden = true;
      button.setAttribute("aria-expanded", "false");
      return;
    }
    const answer = await api(`/alerts/${alert.id}/isbar${query({ lang: currentLang() })}`);
    pre.textContent = answer.text;
    pre.hidden = false;
    button.setAttribute("aria-expanded", "true");
  }

  renderRanges() {
    clear(this.rangeBox);
    for (const [key] of RANGES) {
      this.rangeBox.append(
        h("button", { type: "button", class: "range", "aria-pressed": String(this.range === key), dataset: { range: key }, onclick: () => this.load(key) }, t(`range.${key}`)),
      );
    }
    if (this.range === "zoom") this.rangeBox.append(h("span", { class: "range zoomed", "aria-current": "true" }, t("range.zoom")));
  }

  async load(range, window = null) {
    this.range = range;
    if (range !== "zoom") localStorage.setItem("vv.range", range);
    const until = window?.until ?? new Date();
    const days = RANGES.find(([k]) => k === range)?.[1];
    const since = window?.since ?? new Date(until.getTime() - days * DAY_MS);
    this.window = { since, until };
    this.renderRanges();
    const width = Math.max(280, this.plotsBox.clientWidth || 600);
    const points = Math.min(1000, Math.round(width / 2));
    const w = { since: since.toISOString(), until: until.toISOString() };
    const kinds = PANELS.map((p) => p.kind);
    const [series, marks, baseline] = await Promise.all([
      Promise.all(kinds.map((kind) => api(this.path(`/series${query({ kind, ...w, points })}`)))),
      api(`/alerts${query({ patient: this.id, state: [...ACTIVE, "resolved"], since: w.since, limit: 500 })}`),
      api(this.path(`/baseline${query({ at: w.until })}`)).catch(() => []),
    ]);
    const byKind = Object.fromEntries(kinds.map((k, i) => [k, series[i]]));
    const baselines = Object.fromEntries(baseline.map((b) => [b.kind, b]));
    for (const { plot } of this.plots) plot.destroy();
    this.plots = [];
    clear(this.plotsBox);
    const rangeText = range === "zoom" ? `${localTime(w.since)} – ${localTime(w.until)}` : t(`range.${range}`);
    for (const panel of PANELS) {
      const { kind } = panel;
      const data = plotData(byKind[kind]);
      const { n } = data;
      // weight is part of heart failure's monitoring: "no readings" is news there, not for COPD
      const optional = panel.optional || (kind === "weight" && this.patient.group === "copd");
      if (optional && n === 0) continue;
      const title = kindName(kind);
      const plotEl = h("div", { class: "plot", role: "img", "aria-label": t("chart.label", { k: title, r: rangeText, n }) });
      const fig = h("figure", { class: "panel", dataset: { panel: kind, readings: n, bucketS: byKind[kind].bucket_s } }, h("figcaption", {}, `${title} (${panel.unit})`), plotEl);
      this.plotsBox.append(fig);
      if (n === 0) {
        plotEl.append(h("p", { class: "nodata" }, t("patient.nodata")));
        continue;
      }
      const panelAlerts = marks.filter((a) => !a.kind || a.kind === kind);
      fig.dataset.alerts = String(panelAlerts.length);
      if (baselines[kind]) fig.dataset.baseline = JSON.stringify(baselines[kind]);
      const plot = trendPlot(plotEl, data, {
        label: title,
        unit: panel.unit,
        limits: this.limits?.[kind],
        baseline: baselines[kind],
        alerts: panelAlerts,
        window: w,
        unreliableLabel: t("chart.unreliable"),
        timeLabel: t("col.time"),
        formatTime: plotTime,
        onZoom: (s, u) => this.load("zoom", { since: s, until: u }),
      });
      plotEl.__uplot = plot; // for the end-to-end tests and a look from the console
      this.plots.push({ plot, el: plotEl });
    }
  }

  renderLatest(latest) {
    clear(this.latestBox).append(h("h2", { id: "h-latest" }, t("patient.latest")));
    const body = h("tbody");
    for (const r of latest) {
      body.append(
        h(
          "tr",
          { dataset: { kind: r.kind } },
          h("th", { scope: "row" }, kindName(r.kind)),
          h("td", {}, `${num(r.value)} ${unitText(r.unit)}`),
          h("td", {}, localTime(r.measured_at)),
          h("td", {}, [r.device_model, r.device_address].filter(Boolean).join(" · ") || "–"),
          h("td", { class: r.flags?.length ? "flagged" : "" }, flagsText(r.flags)),
        ),
      );
    }
    this.latestBox.append(
      h(
        "div",
        { class: "table-wrap" },
        h("table", {}, h("thead", {}, h("tr", {}, ["kind", "value", "time", "device", "flags"].map((c) => h("th", { scope: "col" }, t(`col.${c}`))))), body),
      ),
    );
  }

  async loadLimits() {
    const [limits, history] = await Promise.all([api(this.path("/thresholds")), api(this.path("/thresholds/history"))]);
    this.limits = Object.fromEntries(limits.map((l) => [l.kind, l]));
    const physician = this.me.role === "physician";
    clear(this.limitsBox).append(h("h2", { id: "h-limits" }, t("patient.limits")));
    const body = h("tbody");
    for (const l of limits) {
      body.append(
        h(
          "tr",
          { dataset: { kind: l.kind } },
          h("th", { scope: "row" }, kindName(l.kind)),
          LIMIT_FIELDS.map((f) => h("td", {}, num(l[f]))),
          h("td", {}, l.source === "patient" ? `${t("limits.patient")} (${l.set_by})` : t("limits.group")),
          physician ? h("td", {}, h("button", { type: "button", class: "secondary", "aria-label": `${t("limits.edit")}: ${kindName(l.kind)}`, onclick: () => this.editLimits(l) }, t("limits.edit"))) : null,
        ),
      );
    }
    const heads = ["kind", ...LIMIT_FIELDS, "source"].map((c) => h("th", { scope: "col" }, t(`col.${c}`)));
    if (physician) heads.push(h("th", { scope: "col" }, t("col.actions")));
    this.limitsBox.append(h("div", { class: "table-wrap" }, h("table", { class: "limits" }, h("thead", {}, h("tr", {}, heads)), body)));
    this.limitsBox.append(h("h3", {}, t("patient.history")));
    if (!history.length) {
      this.limitsBox.append(h("p", {}, t("patient.nohistory")));
      return;
    }
    const hb = h("tbody");
    for (const c of history) {
      hb.append(
        h(
          "tr",
          {},
          h("td", {}, localTime(c.set_at)),
          h("td", {}, kindName(c.kind)),
          h("td", {}, c.set_by),
          h("td", {}, c.reason),
          h("td", {}, limitsText(c.old_limits)),
          h("td", {}, limitsText(c.new_limits)),
        ),
      );
    }
    const hh = ["changed", "kind", "by", "reason", "before", "after"].map((c) => h("th", { scope: "col" }, t(`col.${c}`)));
    this.limitsBox.append(h("div", { class: "table-wrap" }, h("table", { class: "history" }, h("thead", {}, h("tr", {}, hh)), hb)));
  }

  async editLimits(l) {
    const v = await ask({
      title: `${t("limits.edit")}: ${kindName(l.kind)}`,
      fields: [
        ...LIMIT_FIELDS.map((f) => ({ name: f, type: "number", step: "any", label: t(`col.${f}`), value: l[f] ?? "" })),
        { name: "reason", type: "textarea", label: t("limits.reason"), required: true, minlength: 3 },
      ],
      submit: t("limits.save"),
      cancel: t("act.cancel"),
    });
    if (!v) return;
    const body = { reason: v.reason };
    for (const f of LIMIT_FIELDS) body[f] = v[f] === "" ? null : Number(v[f]);
    try {
      await api(this.path(`/thresholds/${l.kind}`), { method: "PUT", body });
      announce(t("limits.saved", { k: kindName(l.kind) }), "ok");
    } catch (e) {
      announce(t("error.generic", { m: e.message }), "error");
    }
    await this.loadLimits();
    await this.load(this.range, this.window);
  }
}
