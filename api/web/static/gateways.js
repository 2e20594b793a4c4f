// The homes' tablets: which are offline and since when (the longest offline first, the
// server's order, GET /gateways), the last reading, the lowest battery of the home's devices,
// and, on request, each device with its battery (GET /gateways/{id}).

import { api } from "./api.js";
import { clear, h } from "./dom.js";
import { ago, localTime, t } from "./i18n.js";

const LOW_BATTERY = 20; // percent: time to bring batteries on the next visit

function battery(d) {
  const level = d.battery_level;
  const name = d.model || d.address;
  if (level === null || level === undefined) return h("li", {}, `${name}: ${t("gw.nobattery")}`);
  return h("li", { class: level <= LOW_BATTERY ? "low" : "" }, `${name}: ${level} %`);
}

function lowest(level) {
  if (level === null || level === undefined) return h("span", {}, t("gw.nobattery"));
  return h("span", { class: level <= LOW_BATTERY ? "low" : "" }, t("gw.lowest", { n: level }));
}

async function showDevices(g, cell, button) {
  button.disabled = true;
  const detail = await api(`/gateways/${encodeURIComponent(g.id)}`);
  button.remove();
  cell.append(h("ul", { class: "devices" }, detail.devices.map(battery)));
}

function devicesCell(g) {
  const cell = h("td", { class: "c-devices" }, lowest(g.lowest_battery), " ");
  const button = h("button", { type: "button", class: "secondary small", "aria-label": `${t("gw.show")}: ${g.id}`, onclick: () => showDevices(g, cell, button) }, t("gw.show"));
  cell.append(button);
  return cell;
}

export class GatewaysScreen {
  constructor(main, bus) {
    this.main = main;
    this.bus = bus;
  }

  async mount() {
    clear(this.main);
    const body = h("tbody", { id: "gateways-body" });
    this.main.append(
      h("h1", {}, t("gw.title")),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "gateways" },
          h("caption", { class: "visually-hidden" }, t("gw.caption")),
          h("thead", {}, h("tr", {}, ["id", "patient", "state", "since", "lastseen", "devices"].map((c) => h("th", { scope: "col" }, t(`gw.${c}`))))),
          body,
        ),
      ),
    );
    const gateways = await api("/gateways?limit=500");
    if (!gateways.length) body.append(h("tr", {}, h("td", { colspan: 6 }, t("gw.empty"))));
    for (const g of gateways) {
      body.append(
        h(
          "tr",
          { dataset: { gateway: g.id, state: g.state } },
          h("td", {}, g.id),
          h("td", {}, g.patient_id ? h("a", { href: `#/patients/${encodeURIComponent(g.patient_id)}` }, g.patient_id) : "–"),
          h("td", {}, h("span", { class: `state gw-${g.state}` }, t(`gw.${g.state}`))),
          h("td", {}, g.since ? h("span", {}, ago(g.since), h("span", { class: "sub" }, localTime(g.since))) : "–"),
          h("td", {}, g.last_seen_at ? localTime(g.last_seen_at) : "–"),
          devicesCell(g),
        ),
      );
    }
  }
}
