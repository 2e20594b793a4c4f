// The triage list: red, then yellow, then blue, the oldest first (the server's order,
// GET /alerts). Each line: who, what, since when, the doctor responsible now, and the
// actions. It follows the live stream: any transition of the user's teams fetches the list
// again (the server's order and scope stay the only truth), and a new alert is announced.
//
// No layout shift: rows have a fixed height and the columns fixed widths, so a new row moves
// only the rows below it, by one row; the announcement line is fixed and covers nothing.
// While the nurse is touching a row (pointer down, or a button of the list focused in the
// last second), an update waits until she is done, so the line under her finger does not
// change into another patient's.

import { alertButtons } from "./actions.js";
import { api, query } from "./api.js";
import { announce, clear, h } from "./dom.js";
import { ago, currentLang, localTime, t } from "./i18n.js";

const HOLD_MS = 1000;
const MAX_HOLD_MS = 4000;

export function severityBadge(sev) {
  return h("span", { class: `badge sev-${sev}` }, t(`sev.${sev}`));
}

export function doctorText(d) {
  if (!d || !d.role) return t("doctor.unknown");
  const who = [t(`doctor.${d.role}`), d.name].filter(Boolean).join(": ");
  return d.phone ? `${who}, tlf. ${d.phone}` : who;
}

export function groupText(g) {
  return g ? t(`group.${g}`) : "";
}

function row(a, refresh) {
  return h(
    "tr",
    { class: `alert-row sev-row-${a.severity}`, dataset: { alertId: a.id, patient: a.patient_id, rule: a.rule, state: a.state } },
    h("td", { class: "c-sev" }, severityBadge(a.severity), h("span", { class: "sub state-inline" }, t(`state.${a.state}`))),
    h(
      "td",
      { class: "c-patient" },
      h("a", { href: `#/patients/${encodeURIComponent(a.patient_id)}`, class: "patient-link" }, a.patient_id),
      h("span", { class: "sub" }, groupText(a.group)),
    ),
    h("td", { class: "c-what" }, h("span", { class: "msg", title: a.headline }, a.headline)),
    h(
      "td",
      { class: "c-since" },
      h("time", { datetime: a.opened_at }, ago(a.opened_at)),
      h("span", { class: "sub" }, localTime(a.opened_at)),
    ),
    h("td", { class: "c-doctor" }, h("span", { class: "msg" }, doctorText(a.responsible_doctor))),
    h("td", { class: "c-state" }, h("span", { class: `state state-${a.state}` }, t(`state.${a.state}`))),
    h("td", { class: "c-actions" }, alertButtons(a, refresh)),
  );
}

export class TriageScreen {
  constructor(main, bus) {
    this.main = main;
    this.bus = bus;
    this.known = new Set();
    this.first = true;
    this.touchedAt = 0;
    this.pointerDown = false;
    this.pending = null;
  }

  async mount() {
    clear(this.main);
    this.count = h("p", { class: "count", id: "triage-count" }, t("loading"));
    this.body = h("tbody", { id: "triage-body" });
    const table = h(
      "table",
      { class: "triage", "aria-describedby": "triage-count" },
      h("caption", { class: "visually-hidden" }, t("triage.caption")),
      h(
        "colgroup",
        {},
        ["sev", "patient", "what", "since", "doctor", "state", "actions"].map((c) => h("col", { class: `w-${c}` })),
      ),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["severity", "patient", "what", "since", "doctor", "state", "actions"].map((c) => h("th", { scope: "col" }, t(`col.${c}`))),
        ),
      ),
      this.body,
    );
    this.main.append(h("h1", {}, t("triage.title")), this.count, h("div", { class: "table-wrap" }, table));
    table.addEventListener("pointerdown", () => (this.pointerDown = true));
    window.addEventListener("pointerup", (this.up = () => {
      this.pointerDown = false;
      this.touchedAt = Date.now();
    }));
    table.addEventListener("focusin", () => (this.touchedAt = Date.now()));
    this.unsubscribe = this.bus.on("alert", (ev) => this.changed(ev));
    this.unsubscribeBack = this.bus.on("reconnected", () => this.refresh());
    this.clock = setInterval(() => this.tick(), 30000);
    await this.refresh();
  }

  unmount() {
    this.unsubscribe?.();
    this.unsubscribeBack?.();
    clearInterval(this.clock);
    clearTimeout(this.pending);
    window.removeEventListener("pointerup", this.up);
  }

  busy() {
    return this.pointerDown || Date.now() - this.touchedAt < HOLD_MS;
  }

  changed(ev) {
    if (ev.to_state === "open" && ev.from_state === null) {
      announce(t("new.alert", { sev: t(`sev.${ev.severity}`).toLowerCase(), p: ev.patient_id }), ev.severity);
    }
    this.schedule(Date.now());
  }

  // Coalesce bursts of events, and wait for the nurse's hand (at most MAX_HOLD_MS).
  schedule(since) {
    clearTimeout(this.pending);
    const wait = this.busy() && Date.now() - since < MAX_HOLD_MS ? 250 : 100;
    this.pending = setTimeout(() => {
      if (this.busy() && Date.now() - since < MAX_HOLD_MS) this.schedule(since);
      else this.refresh();
    }, wait);
  }

  async refresh() {
    let alerts;
    try {
      alerts = await api(`/alerts${query({ state: ["open", "acknowledged", "snoozed"], limit: 500, lang: currentLang() })}`);
    } catch (e) {
      if (e.status !== 401) announce(t("error.generic", { m: e.message }), "error");
      return;
    }
    const rows = alerts.map((a) => {
      const r = row(a, () => this.refresh());
      if (!this.first && !this.known.has(a.id)) r.classList.add("new");
      return r;
    });
    this.known = new Set(alerts.map((a) => a.id));
    this.first = false;
    this.body.replaceChildren(...rows);
    if (!alerts.length) {
      this.body.append(h("tr", { class: "empty" }, h("td", { colspan: 7 }, t("triage.empty"))));
    }
    this.count.textContent = t("triage.count", { n: alerts.filter((a) => a.state !== "snoozed").length });
    document.body.dataset.triageVersion = String(Number(document.body.dataset.triageVersion || 0) + 1);
  }

  tick() {
    for (const el of this.body.querySelectorAll("time")) el.textContent = ago(el.getAttribute("datetime"));
  }
}
