// A live stream of Server-Sent Events read with fetch, because the browser's EventSource
// cannot send the bearer token in a header and a token in the address would end up in logs:
// the alerts (GET /alerts/stream, for every screen) and one patient's new readings
// (GET /patients/{id}/readings/stream, for the patient page). On a reconnect it sends
// Last-Event-ID, so the alert stream sends exactly the transitions missed in between. The
// server sends a comment every `keepalive` seconds: a silence of three of them means the
// connection is dead even if TCP says not.

import { accessToken } from "./api.js";

const KEEPALIVE_S = 10;
const SILENCE_MS = KEEPALIVE_S * 3000;
const BACKOFF_MS = [500, 1000, 2000, 5000, 10000];

export class EventStream {
  // path: the stream's address; event: the name of the events to hand on;
  // onEvent(data), onState("connecting" | "live" | "lost", wasLost)
  constructor({ path, event, onEvent, onState }) {
    this.path = path;
    this.event = event;
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastId = null;
    this.stopped = false;
    this.failures = 0;
    this.controller = null;
  }

  start() {
    this.stopped = false;
    this.run();
  }

  stop() {
    this.stopped = true;
    this.controller?.abort();
  }

  async run() {
    while (!this.stopped) {
      this.onState(this.failures ? "lost" : "connecting");
      try {
        await this.connect();
      } catch (e) {
        if (this.stopped) return;
        if (e?.status === 401) return; // the session ended; the app shows the log-in
      }
      if (this.stopped) return;
      this.failures++;
      this.onState("lost");
      const wait = BACKOFF_MS[Math.min(this.failures - 1, BACKOFF_MS.length - 1)];
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  async connect() {
    const controller = new AbortController();
    this.controller = controller;
    const headers = { Authorization: `Bearer ${await accessToken()}`, Accept: "text/event-stream" };
    if (this.lastId !== null) headers["Last-Event-ID"] = this.lastId;
    let silence = setTimeout(() => controller.abort(), SILENCE_MS);
    const heard = () => {
      clearTimeout(silence);
      silence = setTimeout(() => controller.abort(), SILENCE_MS);
    };
    try {
      const r = await fetch(`${this.path}?keepalive_s=${KEEPALIVE_S}`, {
        headers,
        signal: controller.signal,
        cache: "no-store",
      });
      if (!r.ok) throw Object.assign(new Error(`stream: ${r.status}`), { status: r.status });
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        heard();
        if (this.failures || this.lastState !== "live") {
          const wasLost = this.failures > 0;
          this.failures = 0;
          this.lastState = "live";
          this.onState("live", wasLost);
        }
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          this.dispatch(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
        }
      }
    } finally {
      clearTimeout(silence);
      this.lastState = "lost";
    }
  }

  dispatch(block) {
    let id = null;
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue; // a comment: the keep-alive
      const at = line.indexOf(":");
      const field = at < 0 ? line : line.slice(0, at);
      const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (id !== null) this.lastId = id;
    if (event === this.event && data.length) this.onEvent(JSON.parse(data.join("\n")));
  }
}
