// The smmf dashboard: one server-sent-event stream from the gateway, rendered in place.
//
// Every value shown comes from registry records, which anyone who can write
// the registry writes: it is only ever set as text (textContent), never as
// markup. The admin token lives in this tab's sessionStorage and goes only
// into the Authorization header of this gateway's own write endpoints.
"use strict";

const COLUMNS = [
  ["id", "instance", "mono"],
  ["endpoint", "endpoint", "mono endpoint"],
  ["backend", "backend"],
  ["kind", "kind"],
  ["state", "state", "state"],
  ["weight", "weight", "num"],
  ["inflight", "in-flight", "num"],
  ["queued", "queued", "num"],
  ["kv", "KV", "num"],
  ["hits", "hits", "num"],
  ["load_age", "load age", "num"],
  ["rate", "req/s", "num"],
  ["p50", "p50 ms", "num"],
  ["p99", "p99 ms", "num"],
  ["errors", "errors", "num"],
  ["actions", "", "actions"],
];
const SERVED_ACTIONS = ["drain", "offline", "online", "restart"];

const $ = (id) => document.getElementById(id);
const tokenInput = $("token");
tokenInput.value = sessionStorage.getItem("smmf-token") || "";
tokenInput.addEventListener("input", () => sessionStorage.setItem("smmf-token", tokenInput.value));

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

const dash = "–";
const share = (v) => (v === null || v === undefined ? dash : `${Math.round(v * 100)}%`);
const count = (v) => (v === null || v === undefined ? dash : String(v));
const ms = (v) => (v === null || v === undefined ? dash : v.toFixed(v < 10 ? 1 : 0));
const age = (v) => (v === null || v === undefined ? dash : `${Math.round(v)}s`);

function cells(instance) {
  const here = instance.here || {};
  return {
    id: instance.id,
    endpoint: instance.endpoint,
    backend: instance.backend,
    kind: instance.kind,
    state: instance.refused ? "refused" : instance.state,
    weight: String(instance.weight),
    inflight: count(instance.inflight),
    queued: count(instance.queued),
    kv: share(instance.kv_cache_usage),
    hits: share(instance.prefix_cache_hit_rate),
    load_age: age(instance.load_age),
    rate: here.rate === undefined ? dash : here.rate.toFixed(2),
    p50: ms(here.p50_ms),
    p99: ms(here.p99_ms),
    errors: share(here.error_rate),
  };
}

function actionButtons(instance) {
  const td = el("td", { class: "actions" });
  const names = instance.persistent ? ["offline", "online", "deregister"] : SERVED_ACTIONS;
  for (const name of names) {
    const button = el("button", { type: "button", "data-action": name }, name);
    button.addEventListener("click", () => act(instance.id, name));
    td.append(button);
  }
  return td;
}

function rowFor(instance) {
  const tr = el("tr", { "data-id": instance.id });
  const values = cells(instance);
  for (const [key, , cls] of COLUMNS) {
    if (key === "actions") {
      tr.append(actionButtons(instance));
      continue;
    }
    const td = el("td", { "data-col": key, class: cls || "" }, values[key]);
    if (key === "state") td.classList.add(values.state);
    if (key === "state" && instance.ejected) td.append(el("span", { class: "ejected" }, "ejected"));
    if (key === "state" && instance.refused) td.title = instance.refused;
    if (key === "endpoint") td.title = instance.endpoint;
    tr.append(td);
  }
  tr.dataset.shape = instance.persistent ? "persistent" : "served";
  return tr;
}

function updateRow(tr, instance) {
  const shape = instance.persistent ? "persistent" : "served";
  if (tr.dataset.shape !== shape) return rowFor(instance);
  const values = cells(instance);
  for (const td of tr.querySelectorAll("td[data-col]")) {
    const key = td.dataset.col;
    if (key === "state") {
      td.className = `state ${values.state}`;
      td.textContent = values.state;
      if (instance.ejected) td.append(el("span", { class: "ejected" }, "ejected"));
      td.title = instance.refused || "";
    } else if (td.textContent !== values[key]) {
      td.textContent = values[key];
    }
  }
  return tr;
}

function modelSection(name) {
  const section = el("article", { class: "model", "data-model": name });
  const head = el("header");
  head.append(el("h3", {}, name), el("span", { class: "muted summary" }));
  const table = el("table");
  const headRow = el("tr");
  for (const [, label, cls] of COLUMNS) headRow.append(el("th", { class: cls && cls.includes("num") ? "num" : "" }, label));
  table.append(el("thead"), el("tbody"));
  table.tHead.append(headRow);
  section.append(head, table);
  return section;
}

function render(view) {
  const registry = view.registry;
  $("registry-url").textContent = registry.url;
  const dot = $("registry-state");
  dot.className = `dot ${registry.connected ? "connected" : "disconnected"}`;
  dot.title = registry.connected ? "registry reachable" : `registry unreachable: ${registry.error || "not yet reached"}`;
  $("writes").textContent = `writes: ${view.gateway.writes}`;
  if (!registry.connected) {
    const since = registry.since_age === null ? "" : ` for ${Math.round(registry.since_age)}s`;
    showBanner(`Registry unreachable${since}: ${registry.error || "no answer yet"}. Showing the last known fleet.`, true);
  } else {
    showBanner(null);
  }

  const container = $("models");
  const seen = new Set();
  for (const model of view.models) {
    seen.add(model.model);
    let section = container.querySelector(`article[data-model="${CSS.escape(model.model)}"]`);
    if (!section) {
      section = modelSection(model.model);
      container.append(section);
    }
    const up = model.instances.filter((i) => i.state === "up" && !i.refused).length;
    const n = model.instances.length;
    section.querySelector(".summary").textContent = `${n} instance${n === 1 ? "" : "s"}, ${up} up`;
    const body = section.querySelector("tbody");
    const rows = new Map([...body.children].map((tr) => [tr.dataset.id, tr]));
    const ordered = model.instances.map((instance) => {
      const existing = rows.get(instance.id);
      rows.delete(instance.id);
      return existing ? updateRow(existing, instance) : rowFor(instance);
    });
    for (const gone of rows.values()) gone.remove();
    ordered.forEach((tr, i) => {
      if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
    });
  }
  for (const section of [...container.children]) {
    if (!seen.has(section.dataset.model)) section.remove();
  }
  $("empty").hidden = view.models.length > 0;
  document.body.dataset.updated = String(view.at);
}

function showBanner(text, bad) {
  const banner = $("banner");
  banner.hidden = !text;
  banner.textContent = text || "";
  banner.classList.toggle("bad", Boolean(bad));
}

function note(text, ok) {
  const item = el("li", { class: ok ? "ok" : "failed" }, `${new Date().toLocaleTimeString()} ${text}`);
  $("log").prepend(item);
}

async function send(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (tokenInput.value) headers.Authorization = `Bearer ${tokenInput.value}`;
  try {
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const answer = await response.json().catch(() => ({ success: false, msg: `HTTP ${response.status}` }));
    return { ok: response.ok && answer.success, answer };
  } catch (error) {
    return { ok: false, answer: { msg: `the gateway did not answer: ${error}` } };
  }
}

async function act(id, action) {
  note(`${id}: ${action} requested…`, true);
  const path = `/api/instances/${encodeURIComponent(id)}`;
  const { ok, answer } = action === "deregister" ? await send("DELETE", path) : await send("POST", `${path}/${action}`);
  const acked = answer.ack && answer.ack.acked_at ? ` (acknowledged ${new Date(answer.ack.acked_at * 1000).toLocaleTimeString()})` : "";
  note(`${answer.msg}${acked}`, ok);
}

$("register").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  let body;
  try {
    body = JSON.parse(form.get("body"));
  } catch (error) {
    note(`the body is not JSON: ${error.message}`, false);
    return;
  }
  const request = { body };
  for (const name of ["model_name", "req_url_template", "owner", "response_extract"]) {
    if (form.get(name)) request[name] = form.get(name);
  }
  const { ok, answer } = await send("POST", "/api/server/register", request);
  note(answer.msg, ok);
});

function connect() {
  const events = new EventSource("/api/events");
  events.addEventListener("fleet", (event) => render(JSON.parse(event.data)));
  events.addEventListener("open", () => {
    if ($("banner").dataset.gateway) {
      delete $("banner").dataset.gateway;
      showBanner(null);
    }
  });
  events.addEventListener("error", () => {
    $("banner").dataset.gateway = "lost";
    showBanner("Lost the gateway's feed; reconnecting. Showing the last view.", true);
  });
}

connect();
