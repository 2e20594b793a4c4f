// Building the page: elements from data, never HTML from strings (a value from the server
// is text, never markup: no injection through a note or a message).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

// The announcement line: fixed in place (it covers nothing and moves nothing) and read out
// by screen readers.
let toastTimer = null;
export function announce(text, kind = "info") {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.dataset.kind = kind;
  el.classList.add("shown");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("shown"), 6000);
}

// A modal dialog with a form; resolves with the form's values, or null when cancelled.
export function ask({ title, intro, fields, submit, cancel }) {
  return new Promise((resolve) => {
    const form = h("form", { method: "dialog", class: "dialog-form" });
    const dlg = h("dialog", { "aria-labelledby": "dlg-title" }, form);
    form.append(h("h2", { id: "dlg-title" }, title));
    if (intro) form.append(h("p", { class: "intro" }, intro));
    for (const f of fields) {
      const id = `dlg-${f.name}`;
      let input;
      if (f.type === "select") {
        input = h("select", { id, name: f.name }, f.options.map(([v, label]) => h("option", { value: v }, label)));
      } else if (f.type === "textarea") {
        input = h("textarea", { id, name: f.name, rows: 3, maxlength: 2000, required: f.required, minlength: f.minlength });
      } else {
        input = h("input", { id, name: f.name, type: f.type || "text", required: f.required, step: f.step, value: f.value });
      }
      form.append(h("label", { for: id }, f.label), input);
    }
    const done = (value) => {
      dlg.close();
      dlg.remove();
      resolve(value);
    };
    form.append(
      h(
        "div",
        { class: "buttons" },
        h("button", { type: "button", class: "secondary", onclick: () => done(null) }, cancel),
        h("button", { type: "submit", class: "primary" }, submit),
      ),
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!form.reportValidity()) return;
      done(Object.fromEntries(new FormData(form)));
    });
    dlg.addEventListener("cancel", (e) => {
      e.preventDefault();
      done(null);
    });
    document.body.append(dlg);
    dlg.showModal();
  });
}
