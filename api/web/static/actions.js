// The nurse's changes of an alert, from the list and from the patient page alike: one tap
// for "I've got it" (with a note from the patient page's dialog), then "Note" for a note to
// the acknowledged alert; snooze and resolve with a note or reason. The server's life cycle decides; a change someone else made first is a
// 409, said in plain words, and the caller refreshes what it shows.

import { api } from "./api.js";
import { announce, ask, h } from "./dom.js";
import { t } from "./i18n.js";

const SNOOZE_CHOICES = [30, 60, 120, 240, 480];

async function change(alert, verb, body, doneKey) {
  try {
    await api(`/alerts/${alert.id}/${verb}`, { method: "POST", body });
    announce(t(doneKey, { p: alert.patient_id }), "ok");
    return true;
  } catch (e) {
    if (e.status === 409) announce(t("error.conflict"), "error");
    else if (e.status === 403) announce(t("error.forbidden"), "error");
    else announce(t("error.generic", { m: e.message }), "error");
    return false;
  }
}

export function acknowledge(alert, note = null) {
  return change(alert, "acknowledge", { note }, "done.ack");
}

export async function acknowledgeWithNote(alert) {
  const v = await ask({
    title: t("dlg.ack"),
    intro: t("dlg.for", { p: alert.patient_id, m: alert.headline }),
    fields: [{ name: "note", type: "textarea", label: t("dlg.note") }],
    submit: t("act.ack"),
    cancel: t("act.cancel"),
  });
  return v ? acknowledge(alert, v.note || null) : false;
}

export async function addNote(alert) {
  const v = await ask({
    title: t("dlg.note.title"),
    intro: t("dlg.for", { p: alert.patient_id, m: alert.headline }),
    fields: [{ name: "note", type: "textarea", label: t("dlg.note"), required: true, minlength: 1 }],
    submit: t("act.save"),
    cancel: t("act.cancel"),
  });
  return v ? change(alert, "note", { note: v.note }, "done.note") : false;
}

export async function snooze(alert) {
  const v = await ask({
    title: t("dlg.snooze"),
    intro: t("dlg.for", { p: alert.patient_id, m: alert.headline }),
    fields: [
      {
        name: "minutes",
        type: "select",
        label: t("dlg.until"),
        options: SNOOZE_CHOICES.map((m) => [m, m < 60 ? t("minutes", { n: m }) : t("hours", { n: m / 60 })]),
      },
      { name: "note", type: "textarea", label: t("dlg.note") },
    ],
    submit: t("act.snooze"),
    cancel: t("act.cancel"),
  });
  if (!v) return false;
  const until = new Date(Date.now() + Number(v.minutes) * 60000).toISOString();
  return change(alert, "snooze", { until, note: v.note || null }, "done.snooze");
}

export async function resolve(alert) {
  const v = await ask({
    title: t("dlg.resolve"),
    intro: t("dlg.for", { p: alert.patient_id, m: alert.headline }),
    fields: [{ name: "reason", type: "textarea", label: t("dlg.reason"), required: true, minlength: 3 }],
    submit: t("act.resolve"),
    cancel: t("act.cancel"),
  });
  return v ? change(alert, "resolve", { reason: v.reason }, "done.resolve") : false;
}

// The buttons of one alert; `after` runs when a change went through (or was refused).
export function alertButtons(alert, after, { withNote = false } = {}) {
  const run = (fn) => async (e) => {
    e.currentTarget.disabled = true;
    await fn(alert);
    after();
  };
  const label = (key) => `${t(key)}: ${alert.patient_id}`;
  return h(
    "div",
    { class: "actions" },
    // In the same place once acknowledged, so the row keeps its shape: a note to it.
    alert.state !== "acknowledged"
      ? h(
          "button",
          { type: "button", class: "primary", "aria-label": label("act.ack"), dataset: { action: "ack" }, onclick: run(withNote ? acknowledgeWithNote : (a) => acknowledge(a)) },
          t("act.ack"),
        )
      : h("button", { type: "button", class: "secondary", "aria-label": label("act.note"), dataset: { action: "note" }, onclick: run(addNote) }, t("act.note")),
    h("button", { type: "button", class: "secondary", "aria-label": label("act.snooze"), dataset: { action: "snooze" }, onclick: run(snooze) }, t("act.snooze")),
    h("button", { type: "button", class: "secondary", "aria-label": label("act.resolve"), dataset: { action: "resolve" }, onclick: run(resolve) }, t("act.resolve")),
  );
}
