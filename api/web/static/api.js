// The API client of the web view: the tokens, their refresh, and the end of a session.
//
// The tokens live in sessionStorage: they die with the tab, are never in a cookie (so no
// request of another site carries them) and never in an address (so never in a log). The
// access token is refreshed a minute before it runs out; when the refresh is refused (the
// refresh token expired after its 8 hours, or was revoked) the session is over and the
// log-in page says so. Log-out revokes the refresh token's whole chain on the server.

const KEY = "vv.session";
let onEnded = () => {};
let refreshing = null;

export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail ? `${title}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
  }
}

export function onSessionEnded(fn) {
  onEnded = fn;
}

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || "null");
  } catch {
    return null;
  }
}

function store(answer) {
  const now = Date.now();
  const s = {
    access: answer.access_token,
    refresh: answer.refresh_token,
    accessUntil: now + answer.expires_in * 1000,
    refreshUntil: now + answer.refresh_expires_in * 1000,
  };
  sessionStorage.setItem(KEY, JSON.stringify(s));
  return s;
}

export function loggedIn() {
  const s = load();
  return !!s && s.refreshUntil > Date.now();
}

async function problem(r) {
  let body = {};
  try {
    body = await r.json();
  } catch {
    /* not a problem document */
  }
  return new ApiError(r.status, body.title || r.statusText, body.detail);
}

export async function login(username, password) {
  const r = await fetch("/auth/token", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ username, password }),
  });
  if (!r.ok) {
    const e = await problem(r);
    e.retryAfter = Number(r.headers.get("Retry-After") || 0);
    throw e;
  }
  store(await r.json());
}

function end(reason) {
  sessionStorage.removeItem(KEY);
  onEnded(reason);
}

export async function logout() {
  const s = load();
  sessionStorage.removeItem(KEY);
  if (s) {
    // Revoke on the server; a failure (network) still ends the session here.
    await fetch("/auth/logout", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: s.refresh }),
    }).catch(() => {});
  }
  onEnded("loggedout");
}

async function refresh() {
  const s = load();
  if (!s || s.refreshUntil <= Date.now()) {
    end("expired");
    throw new ApiError(401, "session expired");
  }
  // One refresh at a time: a refresh token works once, a second use revokes the chain.
  refreshing ??= fetch("/auth/refresh", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: s.refresh }),
  })
    .then(async (r) => {
      if (!r.ok) {
        end("expired");
        throw await problem(r);
      }
      return store(await r.json());
    })
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

export async function accessToken() {
  let s = load();
  if (!s) {
    end("expired");
    throw new ApiError(401, "not logged in");
  }
  if (s.accessUntil - 60000 < Date.now()) s = await refresh();
  return s.access;
}

// A JSON request with the bearer token; a 401 gets one refresh and one retry.
export async function api(path, { method = "GET", body, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { Authorization: `Bearer ${await accessToken()}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let r;
    try {
      r = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, "no connection", "the hub did not answer");
    }
    if (r.status === 401 && attempt === 0) {
      await refresh();
      continue;
    }
    if (!r.ok) throw await problem(r);
    return r.status === 204 ? null : r.json();
  }
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null) continue;
    for (const x of Array.isArray(v) ? v : [v]) q.append(k, x);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}
