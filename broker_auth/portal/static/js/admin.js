// The seller's workspace: every action is a call of the public admin API with the admin token,
// which is kept in sessionStorage (this tab only) and sent as a Bearer token.
import { api, ApiError } from "./api.js";

const TOKEN_KEY = "admin.token";
const REFRESH_MS = 3000;
const IMPORT_CHUNK = 1000; // the API takes up to 1,000 addresses a call
const $ = (id) => document.getElementById(id);
const state = { auth: null, timer: null };

function notice(text, isError = false) {
  const el = $("notice");
  el.textContent = text;
  el.classList.toggle("error", isError);
  el.hidden = !text;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  if (className) td.className = className;
  return td;
}

function emptyItem(text) {
  const li = document.createElement("li");
  li.className = "muted";
  li.textContent = text;
  return li;
}

function button(label, onClick, className = "secondary") {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
const call = (path, options = {}) => api(path, { ...options, auth: state.auth });

// ---------------------------------------------------------------- session

async function logIn(token) {
  state.auth = { token };
  await call("api/devices"); // the check: 401 for a wrong token
  sessionStorage.setItem(TOKEN_KEY, token);
  $("admin-login").hidden = true;
  $("workspace").hidden = false;
  $("admin-logout").hidden = false;
  $("admin-state").textContent = "Logged in as the seller";
  await refresh();
}

function logOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.auth = null;
  clearTimeout(state.timer);
  $("workspace").hidden = true;
  $("admin-login").hidden = false;
  $("admin-logout").hidden = true;
  $("admin-state").textContent = "Not logged in";
}

async function refresh() {
  clearTimeout(state.timer);
  if (!state.auth) return;
  try {
    await Promise.all([
      loadRevenue(), loadDevices(), loadProducts(), loadPool(), loadGrants(), loadPayments(),
    ]);
    document.body.dataset.refreshed = String(Date.now());
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      logOut();
      notice("The admin token was refused; log in again.", true);
      return;
    }
    notice(`Could not refresh: ${err.message}`, true);
  }
  state.timer = setTimeout(refresh, REFRESH_MS);
}

// ---------------------------------------------------------------- revenue

async function loadRevenue() {
  const rows = await call("api/revenue");
  const body = $("revenue-body");
  body.replaceChildren();
  let total = 0;
  let payments = 0;
  const perDay = new Map();
  for (const r of rows) {
    total += r.confirmed_iota;
    payments += r.payments;
    perDay.set(r.day, (perDay.get(r.day) || 0) + r.confirmed_iota);
    const tr = document.createElement("tr");
    tr.dataset.product = r.product_id ?? "";
    tr.append(cell(r.day), cell(r.product_id ?? "unmatched"),
      cell(String(r.confirmed_iota), "num"), cell(String(r.payments), "num"));
    body.append(tr);
  }
  $("revenue-total").textContent = String(total);
  $("revenue-payments").textContent = String(payments);
  drawBars($("revenue-chart"), [...perDay.entries()]);
}

function drawBars(canvas, points) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  if (!points.length) return;
  const style = getComputedStyle(document.documentElement);
  const max = Math.max(...points.map(([, v]) => v));
  const slot = width / points.length;
  ctx.font = "12px system-ui";
  points.forEach(([day, value], i) => {
    const h = max ? (value / max) * (height - 30) : 0;
    ctx.fillStyle = style.getPropertyValue("--accent").trim() || "#0b6e4f";
    ctx.fillRect(i * slot + slot * 0.15, height - 18 - h, slot * 0.7, h);
    ctx.fillStyle = style.getPropertyValue("--muted").trim() || "#555";
    ctx.fillText(day, i * slot + slot * 0.15, height - 4);
  });
}

async function exportCsv() {
  const response = await fetch("api/payments.csv", {
    headers: { Authorization: `Bearer ${state.auth.token}` },
    cache: "no-store",
  });
  if (!response.ok) throw new ApiError(response.status, await response.text());
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = "payments.csv";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// ---------------------------------------------------------------- devices

async function loadDevices() {
  const devices = await call("api/devices");
  const body = $("devices-body");
  body.replaceChildren();
  for (const d of devices) {
    const tr = document.createElement("tr");
    tr.dataset.device = d.device_id;
    tr.dataset.enabled = String(d.enabled);
    const actions = document.createElement("td");
    if (d.enabled) {
      actions.append(
        button("Rotate password", () => act(rotateDevice(d.device_id))),
        button("Delete", () => act(deleteDevice(d.device_id)), "danger"),
      );
    }
    tr.append(cell(d.device_id), cell(d.username), cell(d.enabled ? "enabled" : "deleted"),
      cell(when(d.last_reading_at), "last-reading"), cell(when(d.created_at)), actions);
    body.append(tr);
  }
}

function showSecret(username, password) {
  const el = $("device-secret");
  el.replaceChildren(`MQTT login of ${username}: password `);
  const code = document.createElement("code");
  code.id = "device-password";
  code.textContent = password;
  el.append(code, " (shown once: put it in the device now).");
  el.hidden = false;
}

async function addDevice(event) {
  event.preventDefault();
  const id = $("device-id").value.trim();
  const created = await call("api/devices", { method: "POST", body: { device_id: id } });
  $("device-id").value = "";
  showSecret(created.username, created.password);
}

async function rotateDevice(id) {
  const { password } = await call(`api/devices/${encodeURIComponent(id)}/password`, {
    method: "POST",
  });
  showSecret(`device.${id}`, password);
}

async function deleteDevice(id) {
  await call(`api/devices/${encodeURIComponent(id)}`, { method: "DELETE" });
  notice(`Device ${id} deleted: cut from the broker; its readings stay.`);
}

// ---------------------------------------------------------------- products

async function loadProducts() {
  const products = await call("api/products/all");
  const body = $("products-body");
  if (body.contains(document.activeElement)) return; // do not undo an edit in progress
  body.replaceChildren();
  for (const p of products) {
    const tr = document.createElement("tr");
    tr.dataset.product = p.id;
    const price = document.createElement("input");
    price.type = "number";
    price.min = "1";
    price.value = String(p.price_iota_per_hour);
    price.className = "price";
    price.setAttribute("aria-label", `Price of ${p.id}`);
    const description = document.createElement("input");
    description.value = p.description;
    description.className = "description";
    description.setAttribute("aria-label", `Description of ${p.id}`);
    const priceCell = document.createElement("td");
    priceCell.append(price);
    const descriptionCell = document.createElement("td");
    descriptionCell.append(description);
    const actions = document.createElement("td");
    actions.append(
      button("Save", () =>
        act(patchProduct(p.id, {
          price_iota_per_hour: Number(price.value),
          description: description.value,
        }))),
      button(p.active ? "Disable" : "Enable", () =>
        act(patchProduct(p.id, { active: !p.active }))),
    );
    tr.append(cell(p.id), cell(p.topic_filter), priceCell, descriptionCell,
      cell(p.active ? "yes" : "no", "active"), actions);
    body.append(tr);
  }
}

async function patchProduct(id, changes) {
  await call(`api/products/${encodeURIComponent(id)}`, { method: "PATCH", body: changes });
  notice(`Product ${id} saved: new orders use it.`);
}

async function addProduct(event) {
  event.preventDefault();
  await call("api/products", {
    method: "POST",
    body: {
      id: $("product-id").value.trim(),
      topic_filter: $("product-filter").value.trim(),
      price_iota_per_hour: Number($("product-price").value),
      description: $("product-description").value,
    },
  });
  $("product-form").reset();
}

// ---------------------------------------------------------------- deposit addresses

async function loadPool() {
  const [pool, health] = await Promise.all([
    call("api/deposit-addresses?state=closed&limit=200"),
    fetch("healthz", { cache: "no-store" }).then((r) => r.json()),
  ]);
  const c = pool.counts;
  $("pool-counts").textContent =
    `free ${c.free ?? 0} · assigned ${c.assigned ?? 0} · closed ${c.closed ?? 0} · swept ${c.swept ?? 0}`;
  const warn = $("pool-warning");
  warn.hidden = health.deposit_addresses === "ok";
  warn.textContent = health.deposit_addresses === "empty"
    ? "No free deposit address: new orders are refused. Import more."
    : `Few free deposit addresses (${health.free_addresses}): import more.`;
  const list = $("pool-closed");
  list.replaceChildren();
  const withValue = pool.addresses.filter((a) => a.confirmed_iota > 0);
  for (const a of withValue) {
    const li = document.createElement("li");
    li.textContent = `${a.address} · ${a.confirmed_iota} i`;
    list.append(li);
  }
  if (!withValue.length) list.append(emptyItem("Nothing to sweep."));
}

async function importAddresses(event) {
  event.preventDefault();
  const file = $("pool-file").files[0];
  const text = (file ? await file.text() : "") + "\n" + $("pool-text").value;
  const addresses = text.split(/\s+/).map((s) => s.trim()).filter((s) => s && !s.startsWith("#"));
  if (!addresses.length) throw new Error("No address to import.");
  let added = 0;
  let known = 0;
  const refused = [];
  for (let i = 0; i < addresses.length; i += IMPORT_CHUNK) {
    const r = await call("api/deposit-addresses", {
      method: "POST",
      body: { addresses: addresses.slice(i, i + IMPORT_CHUNK) },
    });
    added += r.added;
    known += r.already_known;
    refused.push(...r.refused);
  }
  $("pool-result").textContent = `added ${added}, already known ${known}, refused ${refused.length}`
    + (refused.length ? `: ${refused.slice(0, 3).map((x) => x.reason).join("; ")}` : "");
  $("pool-form").reset();
}

// ---------------------------------------------------------------- grants and payments

async function loadGrants() {
  const grants = await call("api/grants/all");
  const list = $("grants-list");
  list.replaceChildren();
  let atRisk = 0;
  for (const g of grants) {
    const li = document.createElement("li");
    li.textContent = `${g.username} · ${g.product_id} until ${when(g.expires_at)}`;
    if (g.provisional_iota > 0) {
      li.textContent += ` · provisional until ${when(g.provisional_until)}, ${g.provisional_iota} i unconfirmed`;
    }
    atRisk += g.provisional_iota || 0;
    list.append(li);
  }
  $("grants-at-risk").textContent = String(atRisk);
  if (!grants.length) list.append(emptyItem("No active grant."));
}

async function loadPayments() {
  const payments = await call("api/payments?limit=200");
  const body = $("payments-body");
  body.replaceChildren();
  for (const p of payments) {
    const tr = document.createElement("tr");
    tr.dataset.matched = String(p.matched);
    if (!p.matched) tr.className = "unmatched";
    tr.append(cell(when(p.confirmed_at)), cell(p.order_id ?? "— none —"), cell(p.username ?? ""),
      // A refused sealed purchase names its quote's product, yet buys nothing: say why.
      cell(p.unmatched_reason ? `unmatched: ${p.unmatched_reason}` : (p.product_id ?? "unmatched")),
      cell(String(p.amount_iota), "num"),
      cell(p.refund_due_iota ? `${p.refund_due_iota} refund due` : "", "num"),
      cell(`${p.address.slice(0, 12)}…`, "mono"));
    if (p.refund_due_iota) tr.classList.add("refund-due");
    body.append(tr);
  }
}

// ---------------------------------------------------------------- wiring

async function act(promise) {
  try {
    await promise;
  } catch (err) {
    notice(err.message, true);
    return;
  }
  document.activeElement?.blur(); // lets the refresh redraw the table the action was in
  await refresh();
}

function onSubmit(id, handler) {
  $(id).addEventListener("submit", (event) => act(handler(event)));
}

async function start() {
  $("admin-login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("admin-login-error");
    error.hidden = true;
    try {
      await logIn($("admin-token").value.trim());
      $("admin-token").value = "";
    } catch (err) {
      state.auth = null;
      error.textContent = err.status === 401 ? "That is not the admin token." : err.message;
      error.hidden = false;
    }
  });
  $("admin-logout").addEventListener("click", logOut);
  $("export-csv").addEventListener("click", () => act(exportCsv()));
  onSubmit("device-form", addDevice);
  onSubmit("product-form", addProduct);
  onSubmit("pool-form", importAddresses);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    try {
      await logIn(saved);
    } catch {
      logOut();
    }
  }
  document.body.dataset.ready = "true";
}

start();
