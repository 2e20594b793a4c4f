// The web view's frame: log-in, the header (menu, connection, language, log-out), the live
// stream shared by every screen, and the screens by the address's fragment:
//   #/alerts            the triage list
//   #/patients/<id>     one patient
//   #/gateways          the homes' tablets and devices
// Served by the API (api/routes/web.py); every datum comes from its routes.

import { ApiError, api, loggedIn, login, logout, onSessionEnded } from "./api.js";
import { announce, clear, h } from "./dom.js";
import { GatewaysScreen } from "./gateways.js";
import { LANGS, currentLang, setLang, t } from "./i18n.js";
import { PatientScreen } from "./patient.js";
import { EventStream } from "./stream.js";
import { TriageScreen } from "./triage.js";

const main = document.getElementById("main");
const conn = document.getElementById("conn");

// A tiny event bus: the stream publishes, the screens listen.
const bus = {
  listeners: {},
  on(name, fn) {
    (this.listeners[name] ??= new Set()).add(fn);
    return () => this.listeners[name].delete(fn);
  },
  emit(name, value) {
    for (const fn of this.listeners[name] ?? []) fn(value);
  },
};

let screen = null;
let stream = null;
let me = null;
let endedReason = null;
let routed = false;

function setConnection(state, wasLost = false) {
  conn.dataset.state = state;
  const key = state === "live" ? (wasLost ? "conn.back" : "conn.live") : state === "lost" ? "conn.lost" : "conn.connecting";
  conn.textContent = t(key);
  if (state === "live" && wasLost) {
    bus.emit("reconnected");
    setTimeout(() => {
      if (conn.dataset.state === "live") conn.textContent = t("conn.live");
    }, 5000);
  }
}

function startStream() {
  stream?.stop();
  stream = new EventStream({
    path: "/alerts/stream",
    event: "alert",
    onEvent: (ev) => bus.emit("alert", ev),
    onState: setConnection,
  });
  stream.start();
}

function header() {
  document.getElementById("skip").textContent = t("skip");
  const nav = document.getElementById("nav");
  nav.setAttribute("aria-label", t("nav.label"));
  clear(nav).append(
    h("a", { href: "#/alerts", dataset: { screen: "alerts" } }, t("nav.alerts")),
    h("a", { href: "#/gateways", dataset: { screen: "gateways" } }, t("nav.gateways")),
  );
  nav.hidden = !me;
  const langSel = document.getElementById("lang");
  document.querySelector("label[for=lang]").textContent = t("lang.label");
  clear(langSel).append(...LANGS.map((l) => h("option", { value: l, selected: l === currentLang() }, l === "da" ? "Dansk" : "English")));
  document.getElementById("who").textContent = me ? `${me.name} (${me.role})` : "";
  const out = document.getElementById("logout");
  out.textContent = t("logout");
  out.hidden = !me;
  conn.hidden = !me;
  if (conn.dataset.state) setConnection(conn.dataset.state); // in the language chosen
}

function loginScreen() {
  screen?.unmount?.();
  screen = null;
  me = null;
  stream?.stop();
  header();
  clear(main);
  const message = h("p", { class: "form-message", id: "login-message", role: "alert" });
  if (endedReason) message.textContent = t(endedReason === "loggedout" ? "login.loggedout" : "login.expired");
  const form = h(
    "form",
    { class: "login", id: "login-form" },
    h("h1", {}, t("login.title")),
    h("label", { for: "username" }, t("login.user")),
    h("input", { id: "username", name: "username", autocomplete: "username", required: true, autocapitalize: "none" }),
    h("label", { for: "password" }, t("login.password")),
    h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true }),
    message,
    h("button", { type: "submit", class: "primary" }, t("login.submit")),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    try {
      await login(String(f.get("username")).trim(), String(f.get("password")));
      endedReason = null;
      await enter();
    } catch (err) {
      message.textContent = err.status === 429 ? t("login.limited", { s: err.retryAfter || 60 }) : t("login.failed");
    }
  });
  main.append(form);
  document.getElementById("username").focus();
}

async function enter() {
  me = await api("/auth/me");
  document.body.dataset.user = me.user_id;
  header();
  startStream();
  if (!location.hash || location.hash === "#/" || location.hash === "#/login") location.hash = "#/alerts";
  else route();
}

async function route() {
  if (!me) return;
  screen?.unmount?.();
  const hash = location.hash || "#/alerts";
  const patient = hash.match(/^#\/patients\/([^/]+)$/);
  for (const a of document.querySelectorAll("#nav a")) {
    a.toggleAttribute("aria-current", hash.startsWith(`#/${a.dataset.screen}`));
  }
  if (patient) screen = new PatientScreen(main, bus, decodeURIComponent(patient[1]), me);
  else if (hash.startsWith("#/gateways")) screen = new GatewaysScreen(main, bus);
  else screen = new TriageScreen(main, bus);
  document.body.dataset.ready = "";
  try {
    await screen.mount();
  } catch (e) {
    if (e.status === 401) return; // the session ended: the log-in page is up
    clear(main).append(h("p", { class: "form-message", role: "alert" }, t("error.generic", { m: e.message })));
  }
  document.body.dataset.ready = hash;
  performance.mark("vv-ready"); // bench/web_bench.py: the screen is drawn and usable
  // A new screen: its content gets the focus (a screen reader starts there); the first one
  // after loading leaves it at the page's start, where Tab finds the skip link.
  if (routed) main.focus({ preventScroll: true });
  routed = true;
}

onSessionEnded((reason) => {
  endedReason = reason;
  document.body.dataset.user = "";
  loginScreen();
});

document.getElementById("logout").addEventListener("click", () => logout());
// The skip link moves the focus, not the address (the address's fragment is the screen).
// Focused after the link's own activation is done, or Chrome's next Tab starts from the link.
document.getElementById("skip").addEventListener("click", (e) => {
  e.preventDefault();
  setTimeout(() => main.focus());
});
document.getElementById("lang").addEventListener("change", (e) => {
  setLang(e.target.value);
  header();
  if (me) route();
  else loginScreen();
});
window.addEventListener("hashchange", route);
// A request that failed for want of a connection, in a handler that did not expect it: said
// on the page (the header already shows the stream's state), not left to the console. Any
// other error stays an error.
window.addEventListener("unhandledrejection", (e) => {
  if (e.reason instanceof ApiError && e.reason.status === 0) {
    e.preventDefault();
    announce(t("error.offline"), "error");
  }
});

setLang(currentLang());
if (loggedIn()) enter().catch(() => loginScreen());
else loginScreen();
