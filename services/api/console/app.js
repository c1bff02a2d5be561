// DataHarvest console: plain JavaScript on the Data API (no build step, no dependencies).
// Everything from the API is put in the page with textContent, never as HTML.
"use strict";

const INPUTS = [["client", "C"], ["portfolio", "P"], ["account", "A"], ["transaction", "T"]];
const TABLES = ["rejections", "quality-issues", "portfolio-summary", "client-tax", "messages"];
const REFRESH_MS = 5000;
const GRID_DATES = 14;
const UPLOAD_POLL_MS = 1500;
const UPLOAD_WAIT_MS = 10 * 60 * 1000;
const state = { token: null, me: null, config: {}, timer: null, uploadName: null };

// -- helpers -----------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function announce(message) {
  $("live").textContent = message;
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch((state.config.apiBase || "") + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401) {
    signOut(`Signed out: ${data && data.message ? data.message : "the token was refused"}`);
    throw new Error("unauthenticated");
  }
  if (!response.ok) {
    const detail = data && data.errors ? data.errors.map((e) => `${e.field}: ${e.message || e.rule}`).join("; ") : "";
    throw new Error(`${method} ${path}: ${response.status} ${data ? data.message : ""} ${detail}`.trim());
  }
  return data;
}

async function allPages(path) {
  let items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api("GET", `${path}${sep}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    items = items.concat(page.items);
    cursor = page.next;
  } while (cursor);
  return items;
}

const isoDate = (yyyymmdd) => `${yyyymmdd.slice(0, 4)}-${yyyymmdd.slice(4, 6)}-${yyyymmdd.slice(6, 8)}`;
const isOperator = () => state.me && state.me.role !== "partner";

// -- sign in / out -------------------------------------------------------------------------------

async function loadConfig() {
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (response.ok) state.config = await response.json();
  } catch (_) {
    state.config = {};
  }
}

function b64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function cognitoSignIn(event) {
  event.preventDefault();
  const c = state.config.cognito;
  const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
  const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem("pkce", verifier);
  const query = new URLSearchParams({
    response_type: "code", client_id: c.clientId, redirect_uri: c.redirectUri,
    scope: "openid email", code_challenge_method: "S256", code_challenge: challenge,
  });
  location.assign(`https://${c.domain}/oauth2/authorize?${query}`);
}

async function cognitoCallback() {
  const code = new URLSearchParams(location.search).get("code");
  const c = state.config.cognito;
  if (!code || !c) return null;
  const response = await fetch(`https://${c.domain}/oauth2/token`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code", client_id: c.clientId, code,
      redirect_uri: c.redirectUri, code_verifier: sessionStorage.getItem("pkce") || "",
    }),
  });
  history.replaceState(null, "", location.pathname + location.hash);
  if (!response.ok) throw new Error("Sign-in with your organisation account failed");
  return (await response.json()).id_token;
}

async function signIn(token) {
  state.token = token.trim();
  try {
    state.me = await api("GET", "/me");
  } catch (error) {
    if (error.message !== "unauthenticated") signOut(error.message);
    return;
  }
  sessionStorage.setItem("token", state.token);
  $("who").textContent = `Signed in as ${state.me.role}${state.me.client_id ? ` of ${state.me.client_id}` : ""}`;
  $("who").hidden = false;
  $("sign-out").hidden = false;
  $("nav").hidden = false;
  for (const item of document.querySelectorAll(".operator-only")) item.hidden = !isOperator();
  showError("");
  if (!location.hash || location.hash === "#/signin") location.hash = "#/grid";
  else route();
}

function signOut(message) {
  state.token = null;
  state.me = null;
  sessionStorage.removeItem("token");
  stopRefresh();
  $("who").hidden = true;
  $("sign-out").hidden = true;
  $("nav").hidden = true;
  showView("signin");
  showError(message || "");
}

// -- views -------------------------------------------------------------------------------------

function showView(name) {
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.id !== `view-${name}`;
  }
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function stopRefresh() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

async function route() {
  stopRefresh();
  if (!state.token) return showView("signin");
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  try {
    if (parts[0] === "clients" && parts[2] === "dates") {
      showView("date");
      await renderDate(decodeURIComponent(parts[1]), parts[3]);
    } else if (parts[0] === "upload") {
      showView("upload");
      await renderUpload();
    } else if (parts[0] === "dlq" && isOperator()) {
      showView("dlq");
      await renderDlq();
    } else if (parts[0] === "registry" && isOperator()) {
      showView("registry");
      await renderRegistry();
    } else {
      showView("grid");
      await renderGrid();
      if ($("live-toggle").checked) state.timer = setInterval(() => renderGrid().catch(report), REFRESH_MS);
    }
    $("main").focus({ preventScroll: true });
  } catch (error) {
    report(error);
  }
}

function report(error) {
  if (error.message !== "unauthenticated") showError(error.message);
}

// -- grid --------------------------------------------------------------------------------------

function inputFlags(item) {
  return INPUTS.map(([prefix, letter]) => {
    if (item[`${prefix}_persisted`]) return el("span", { class: "ok", title: `${prefix}s persisted` }, `${letter}✔`);
    if (item[`${prefix}_error`]) return el("span", { class: "bad", title: `${prefix}s rejected` }, `${letter}✘`);
    return el("span", { title: `${prefix}s missing` }, `${letter}·`);
  });
}

function itemErrors(item) {
  return Object.entries(item).filter(([key, value]) => key.endsWith("_error") && value);
}

function cell(item) {
  const done = Object.keys(item).filter((k) => k.endsWith("_done"));
  const finished = done.filter((k) => item[k]).length;
  const rows = INPUTS.reduce((sum, [prefix]) => sum + (item[`${prefix}_rows`] || 0), 0);
  const rejected = INPUTS.reduce((sum, [prefix]) => sum + (item[`${prefix}_rejections`] || 0), 0);
  const errors = itemErrors(item);
  const stuck = item.stuck || [];
  const label = `${item.partition_key} ${isoDate(item.sort_key)}`;
  return el(
    "a",
    { href: `#/clients/${encodeURIComponent(item.partition_key)}/dates/${isoDate(item.sort_key)}`, "aria-label": `Open ${label}` },
    el("span", { class: "flags" }, inputFlags(item)),
    el("span", { class: "counts" }, `${finished}/${done.length} done · ${rows} rows · ${rejected} rejected`),
    errors.length || stuck.length
      ? el("span", { class: "warn" }, `⚠ ${errors.length} error(s)${stuck.length ? `, stuck: ${stuck.join(", ")}` : ""}`)
      : null,
  );
}

async function renderGrid() {
  const items = isOperator() ? await allPages("/status") : await allPages(`/clients/${encodeURIComponent(state.me.client_id)}/status`);
  const dates = [...new Set(items.map((i) => i.sort_key))].sort().reverse().slice(0, GRID_DATES).reverse();
  const clients = [...new Set(items.map((i) => i.partition_key))].sort();
  const byKey = new Map(items.map((i) => [`${i.partition_key}|${i.sort_key}`, i]));
  const head = el("tr", {}, el("th", { scope: "col" }, "Client"), dates.map((d) => el("th", { scope: "col" }, isoDate(d))));
  const body = clients.map((client) =>
    el("tr", {}, el("th", { scope: "row" }, client), dates.map((d) => {
      const item = byKey.get(`${client}|${d}`);
      return el("td", { class: "cell" }, item ? cell(item) : el("span", { class: "sr-only" }, "no data"));
    })),
  );
  $("grid").tHead.replaceChildren(head);
  $("grid").tBodies[0].replaceChildren(...body);
  announce(`Grid updated at ${new Date().toLocaleTimeString()}: ${clients.length} client(s), ${dates.length} date(s)`);
}

// -- one client and date ---------------------------------------------------------------------------

function table(caption, rows) {
  if (!rows.length) return el("p", {}, `${caption}: none`);
  const columns = Object.keys(rows[0]);
  return el(
    "div", { class: "scroll" },
    el("table", {},
      el("caption", {}, caption),
      el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, columns.map((c) => el("td", {}, typeof r[c] === "object" && r[c] !== null ? JSON.stringify(r[c]) : r[c] ?? "")))))),
  );
}

async function renderDate(client, day) {
  $("date-title").textContent = `${client} · ${day}`;
  const compact = day.replace(/-/g, "");
  const status = await api("GET", `/clients/${encodeURIComponent(client)}/status?from=${day}&to=${day}`);
  const item = status.items.find((i) => i.sort_key === compact);
  const summary = $("date-summary");
  if (!item) {
    summary.replaceChildren(el("p", {}, "No metastore item for this date."));
  } else {
    const entries = Object.entries(item).filter(([k]) => !["partition_key", "sort_key"].includes(k)).sort();
    summary.replaceChildren(
      el("h3", {}, "Progress"),
      el("dl", { class: "item" }, entries.map(([k, v]) => [el("dt", {}, k), el("dd", {}, Array.isArray(v) ? v.join(", ") || "—" : String(v))])),
    );
  }
  const parts = [];
  for (const name of TABLES) {
    const page = await api("GET", `/clients/${encodeURIComponent(client)}/dates/${day}/${name}?limit=200`);
    const section = el("section", { "aria-label": name }, el("h3", {}, name), table(`${name} (${page.items.length}${page.next ? "+" : ""})`, page.items));
    parts.push(section);
  }
  $("date-tables").replaceChildren(...parts);
  announce(`Loaded ${client} ${day}`);
}

// -- upload ----------------------------------------------------------------------------------------
// The file goes from the browser to the landing bucket with a presigned POST the API signs for
// one key of the client (POST /clients/{c}/uploads); the bucket answers with the new version's
// id, and the client's load history (GET /clients/{c}/loads) says what became of that version.

async function uploadNamePattern() {
  // The API's own rule for upload names (its OpenAPI document), so the console checks what the
  // API will check, before anything is sent.
  if (!state.uploadName) {
    const response = await fetch((state.config.apiBase || "") + "/openapi.json");
    if (!response.ok) throw new Error(`GET /openapi.json: ${response.status}`);
    const schema = (await response.json()).components.schemas.UploadRequest.properties.filename;
    state.uploadName = { pattern: new RegExp(schema.pattern), description: schema.description };
  }
  return state.uploadName;
}

function realDate(yyyymmdd) {
  const [y, m, d] = [yyyymmdd.slice(0, 4), yyyymmdd.slice(4, 6), yyyymmdd.slice(6, 8)].map(Number);
  const day = new Date(Date.UTC(y, m - 1, d));
  return day.getUTCFullYear() === y && day.getUTCMonth() === m - 1 && day.getUTCDate() === d;
}

async function checkUploadName(name) {
  const rule = await uploadNamePattern();
  if (!rule.pattern.test(name)) {
    return { ok: false, reason: `${name}: not an upload name; expected ${rule.description} with entity clients, portfolios, accounts or transactions (e.g. accounts_20240102.csv)` };
  }
  const [entity, rest] = name.split("_");
  const day = rest.slice(0, 8);
  if (!realDate(day)) return { ok: false, reason: `${name}: ${day} is not a calendar date (YYYYMMDD)` };
  return { ok: true, entity, day: isoDate(day) };
}

function setCheck(message, ok) {
  const line = $("upload-check");
  line.textContent = message;
  line.className = ok === undefined ? "hint" : ok ? "hint ok" : "hint bad";
}

async function onUploadFileChange() {
  const file = $("upload-file").files[0];
  if (!file) return setCheck("");
  const check = await checkUploadName(file.name);
  setCheck(check.ok ? `${check.entity} of business date ${check.day}, ${file.size} bytes` : check.reason, check.ok);
}

async function renderUpload() {
  const client = $("upload-client");
  if (state.me.role === "partner") {
    client.value = state.me.client_id;
    client.readOnly = true;
  } else {
    client.readOnly = false;
  }
  await uploadNamePattern();
}

function uploadRow(key) {
  const cells = { status: el("td", {}, "uploading"), loaded: el("td", {}), rejected: el("td", {}), detail: el("td", {}) };
  const row = el("tr", {}, el("th", { scope: "row" }, key), cells.status, cells.loaded, cells.rejected, cells.detail);
  const body = $("uploads").tBodies[0];
  if (!body.querySelector("th")) body.replaceChildren();
  body.prepend(row);
  return cells;
}

const OUTCOME = {
  loaded: (l) => `${l.rows_loaded} rows loaded, ${l.rows_rejected} rejected`,
  rejected: (l) => `rejected whole: ${l.reason}`,
  unroutable: (l) => `not processed: ${l.reason}`,
  unchanged: () => "same content as the current load; nothing changed",
  retracted: () => "the input and what derives from it are gone",
  abandoned: () => "a newer upload of the same file overtook this one",
};

async function followLoad(client, key, version, cells) {
  const deadline = Date.now() + UPLOAD_WAIT_MS;
  while (Date.now() < deadline) {
    if (!state.token) return; // signed out: the row stays as it was
    const page = await api("GET", `/clients/${encodeURIComponent(client)}/loads?limit=100`);
    const load = page.items.find((l) => l.source_key === key && l.source_version === version);
    if (load && load.status !== "staging") {
      cells.status.textContent = load.status;
      cells.status.className = load.status === "loaded" ? "ok" : load.status === "unchanged" ? "" : "bad";
      cells.loaded.textContent = load.rows_loaded ?? "";
      cells.rejected.textContent = load.rows_rejected ?? "";
      cells.detail.textContent = (OUTCOME[load.status] || (() => load.reason || ""))(load);
      announce(`${key}: ${load.status}`);
      return;
    }
    cells.status.textContent = load ? "loading" : "waiting for the load";
    await new Promise((resolve) => setTimeout(resolve, UPLOAD_POLL_MS));
  }
  cells.status.textContent = "pending";
  cells.detail.textContent = `no outcome after ${UPLOAD_WAIT_MS / 60000} minutes; see the grid or the load history`;
}

async function upload(event) {
  event.preventDefault();
  const client = $("upload-client").value.trim();
  const file = $("upload-file").files[0];
  if (!client) return setCheck("Client: required", false);
  if (!file) return setCheck("File: choose a file", false);
  const check = await checkUploadName(file.name);
  if (!check.ok) return setCheck(check.reason, false);
  if (!file.size) return setCheck(`${file.name}: the file is empty`, false);
  const button = $("upload-submit");
  button.disabled = true;
  let cells = null;
  try {
    // A policy for this key and at most this file's size.
    const post = await api("POST", `/clients/${encodeURIComponent(client)}/uploads`, { filename: file.name, max_bytes: file.size });
    cells = uploadRow(post.key);
    const form = new FormData();
    for (const [name, value] of Object.entries(post.fields)) form.append(name, value);
    form.append("file", file); // S3 reads the fields before the file: it comes last
    const response = await fetch(post.url, { method: "POST", body: form });
    if (!response.ok) {
      const text = await response.text();
      const message = /<Message>([^<]*)<\/Message>/.exec(text);
      throw new Error(`upload of ${post.key} refused: ${response.status} ${message ? message[1] : ""}`.trim());
    }
    const version = response.headers.get("x-amz-version-id");
    if (!version) throw new Error(`upload of ${post.key}: the bucket did not say which version it stored`);
    setCheck(`${post.key} uploaded; following its load`, true);
    $("upload-form").reset();
    $("upload-client").value = client; // the next file is most likely for the same client
    await renderUpload();
    // The next file can go while this one loads; the row follows this one.
    followLoad(client, post.key, version, cells).catch((error) => {
      failRow(cells, error);
      report(error);
    });
  } catch (error) {
    if (cells) failRow(cells, error);
    throw error;
  } finally {
    button.disabled = false;
  }
}

function failRow(cells, error) {
  cells.status.textContent = "failed";
  cells.status.className = "bad";
  cells.detail.textContent = error.message;
}

// -- dead letters -------------------------------------------------------------------------------------

async function redrive(queue) {
  const body = queue ? { queue } : {};
  const result = await api("POST", "/dlq/redrive", body);
  await renderDlq();
  announce(`Redrove ${result.total} message(s)`);
}

async function renderDlq() {
  const data = await api("GET", "/dlq");
  const rows = data.items.map((m) =>
    el("tr", {},
      el("td", {}, m.queue), el("td", {}, m.message_id), el("td", {}, m.receive_count),
      el("td", {}, m.first_received), el("td", {}, m.keys.join("\n")),
      el("td", {}, el("button", { type: "button", onclick: (e) => { e.target.disabled = true; redrive(m.queue).catch(report); } }, `Redrive ${m.queue}`))));
  $("dlq").tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "6" }, "No dead letters."))]));
  announce(`${data.items.length} dead letter(s) in ${data.queues.length} queue(s)`);
}

// -- registry -------------------------------------------------------------------------------------

async function toggle(entry, button) {
  button.disabled = true;
  const action = entry.enabled ? "disable" : "enable";
  const result = await api("POST", `/registry/${encodeURIComponent(entry.name)}/${action}`, { backfill: $("backfill").checked });
  await renderRegistry();
  announce(`${entry.name} ${action}d (backfill: ${result.backfill.apply} apply, ${result.backfill.retract} retract)`);
}

async function renderRegistry() {
  const data = await api("GET", "/registry");
  const rows = data.items.map((entry) =>
    el("tr", {},
      el("th", { scope: "row" }, entry.name),
      el("td", {}, el("button", {
        type: "button", "aria-pressed": String(entry.enabled), "aria-label": `${entry.name} enabled`,
        onclick: (e) => toggle(entry, e.currentTarget).catch(report),
      }, entry.enabled ? "Enabled" : "Disabled")),
      el("td", {}, entry.watch.join(", ")), el("td", {}, entry.owner), el("td", {}, entry.description)));
  $("registry").tBodies[0].replaceChildren(...rows);
}

// -- start -------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  await loadConfig();
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token").value);
  });
  $("sign-out").addEventListener("click", () => signOut("Signed out"));
  $("refresh").addEventListener("click", () => renderGrid().catch(report));
  $("live-toggle").addEventListener("change", () => route());
  $("redrive-all").addEventListener("click", () => redrive(null).catch(report));
  $("upload-form").addEventListener("submit", (event) => upload(event).catch(report));
  $("upload-file").addEventListener("change", () => onUploadFileChange().catch(report));
  window.addEventListener("hashchange", route);
  if (state.config.cognito) {
    $("cognito").hidden = false;
    $("cognito-link").addEventListener("click", cognitoSignIn);
  }
  let token = sessionStorage.getItem("token");
  try {
    token = (await cognitoCallback()) || token;
  } catch (error) {
    showError(error.message);
  }
  if (token) await signIn(token);
  else signOut("");
});
