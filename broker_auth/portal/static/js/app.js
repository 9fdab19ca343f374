// The portal page: catalog, account, order + payment, grants with countdowns, live chart;
// buying without an account is js/buy.js.
import * as api from "./api.js";
import { initBuy } from "./buy.js";
import { LiveChart, formatNumber } from "./chart.js";
import { Feed, avgFilterFor, parseReading, topicMatches } from "./live.js";
import { drawQr, paymentLink, walletCommand } from "./payment.js";

const ORDER_KEY = "portal.order";
const ORDER_POLL_MS = 1000;
const GRANTS_POLL_MS = 5000;
const SUBSCRIBE_RETRY_MS = 1000;
const STEPS = ["pending", "unconfirmed", "confirmed"];

const $ = (id) => document.getElementById(id);

const state = {
  config: null,
  products: [],
  credentials: null, // the session {username, token, expires_at}
  mqttPassword: null, // in memory only, for the live MQTT connection
  grants: [],
  grantsTimer: null,
  expiryRefreshAt: 0,
  order: null,
  orderTimer: null,
  liveProduct: null,
  avgFeed: null,
  rawFeed: null,
  rawFilter: null,
  series: new Map(), // topic -> {kind, row, count}
};

const chart = new LiveChart($("chart"));

// ---------------------------------------------------------------- helpers

function show(el, visible) {
  el.hidden = !visible;
}

function notice(message) {
  const el = $("notice");
  el.textContent = message || "";
  show(el, Boolean(message));
}

function setError(el, err) {
  el.textContent = err ? (err instanceof Error ? err.message : String(err)) : "";
  show(el, Boolean(err));
}

function productById(id) {
  return state.products.find((p) => p.id === id) || null;
}

function td(text, className) {
  const cell = document.createElement("td");
  if (className) cell.className = className;
  if (text instanceof Node) cell.append(text);
  else cell.textContent = text;
  return cell;
}

function code(text) {
  const el = document.createElement("code");
  el.textContent = text;
  return el;
}

function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, "0");
  return h > 0 ? `${h}h ${pad(m)}m ${pad(s % 60)}s` : `${pad(m)}m ${pad(s % 60)}s`;
}

// ---------------------------------------------------------------- catalog

function renderCatalog() {
  const body = $("catalog-body");
  body.replaceChildren();
  if (state.products.length === 0) {
    const row = document.createElement("tr");
    row.append(td("No products yet.", "muted"));
    row.firstChild.colSpan = 5;
    body.append(row);
  }
  for (const p of state.products) {
    const row = document.createElement("tr");
    row.dataset.product = p.id;
    const actions = td("", "row-actions");
    const order = document.createElement("button");
    order.type = "button";
    order.className = "small";
    order.textContent = "Order";
    order.setAttribute("aria-label", `Order ${p.id}`);
    order.addEventListener("click", () => {
      $("order-product").value = p.id;
      updateEstimate();
      $("order-hours").focus();
    });
    const watch = document.createElement("button");
    watch.type = "button";
    watch.className = "small secondary";
    watch.textContent = "Chart";
    watch.setAttribute("aria-label", `Chart ${p.id}`);
    watch.addEventListener("click", () => {
      $("live-product").value = p.id;
      selectLiveProduct(p.id);
      $("live").scrollIntoView({ behavior: "smooth" });
    });
    actions.append(order, " ", watch);
    row.append(
      td(p.id),
      td(code(p.topic_filter)),
      td(p.description || ""),
      td(`${p.price_iota_per_hour.toLocaleString()} i/h`, "num price"),
      actions,
    );
    body.append(row);
  }
  for (const select of [$("order-product"), $("live-product")]) {
    const current = select.value;
    select.replaceChildren(
      ...state.products.map((p) => new Option(`${p.id} (${p.topic_filter})`, p.id)),
    );
    if (productById(current)) select.value = current;
  }
  updateEstimate();
}

function updateEstimate() {
  const p = productById($("order-product").value);
  const hours = Number($("order-hours").value);
  $("order-estimate").textContent =
    p && hours > 0
      ? `Costs ${Math.ceil(p.price_iota_per_hour * hours).toLocaleString()} i ` +
        `(${p.price_iota_per_hour.toLocaleString()} i per hour).`
      : "";
}

// ---------------------------------------------------------------- account

function renderSession() {
  const c = state.credentials;
  $("session-user").textContent = c ? `Logged in as ${c.username}` : "Not logged in";
  show($("logout"), Boolean(c));
  show($("login-form"), !c);
  show($("account-info"), Boolean(c));
  $("account-name").textContent = c ? c.username : "";
  $("order-button").disabled = !c;
  show($("order-login-hint"), !c);
}

async function login(username, password) {
  const session = await api.createSession(username, password);
  state.mqttPassword = null; // the login password is not the MQTT one
  await resume(session);
}

// The MQTT password broker_auth generated: shown once, kept in memory for this page's live
// connection only (never stored).
function useMqttPassword(password) {
  state.mqttPassword = password;
  $("mqtt-password").textContent = password;
  show($("mqtt-password-line"), true);
  state.reloginNoticed = false;
  syncRawSubscription();
}

async function onNewMqttPassword() {
  try {
    const { mqtt_password } = await api.rotateMqttPassword(state.credentials);
    if (state.rawFeed) state.rawFeed.end();
    state.rawFeed = null;
    state.rawFilter = null;
    useMqttPassword(mqtt_password);
    notice("New MQTT password: the old one no longer works, its connections were cut.");
  } catch (err) {
    notice(`Could not get a new MQTT password: ${err.message}`);
  }
}

async function resume(session) {
  const grants = await api.getGrants(session); // also checks a restored session is alive
  state.credentials = session;
  api.saveSession(session);
  renderSession();
  applyGrants(grants);
  scheduleGrants();
}

function logout() {
  if (state.credentials) api.deleteSession(state.credentials).catch(() => {});
  state.credentials = null;
  state.mqttPassword = null;
  show($("mqtt-password-line"), false);
  $("mqtt-password").textContent = "";
  api.clearSession();
  sessionStorage.removeItem(ORDER_KEY);
  clearTimeout(state.grantsTimer);
  stopOrderPolling();
  state.order = null;
  showPaymentDetails(false);
  applyGrants([]);
  if (state.rawFeed) state.rawFeed.end();
  state.rawFeed = null;
  renderSession();
  notice("Logged out.");
}

async function onLoginSubmit(event) {
  event.preventDefault();
  const action = event.submitter?.dataset.action || "login";
  const username = $("username").value.trim();
  const password = $("password").value;
  setError($("login-error"), null);
  if (!username || !password) {
    setError($("login-error"), "Enter a username and a password.");
    return;
  }
  const buttons = $("login-form").querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  try {
    let mqttPassword = null;
    if (action === "register") {
      try {
        ({ mqtt_password: mqttPassword } = await api.register(username, password));
      } catch (err) {
        if (err.status === 409) throw new Error("That username is taken.");
        throw err;
      }
    }
    await login(username, password);
    if (mqttPassword) useMqttPassword(mqttPassword);
    $("password").value = "";
    notice(action === "register" ? `Account ${username} created.` : `Welcome back, ${username}.`);
  } catch (err) {
    setError(
      $("login-error"),
      err.status === 401 ? "Wrong username or password." : err,
    );
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

// ---------------------------------------------------------------- orders

async function onOrderSubmit(event) {
  event.preventDefault();
  setError($("order-error"), null);
  const productId = $("order-product").value;
  const hours = Number($("order-hours").value);
  if (!state.credentials) {
    setError($("order-error"), "Log in or register first.");
    return;
  }
  if (!(hours > 0)) {
    setError($("order-error"), "Hours must be a number above 0.");
    return;
  }
  $("order-button").disabled = true;
  try {
    const order = await api.createOrder(state.credentials, productId, hours);
    showOrder(order);
    $("payment").scrollIntoView({ behavior: "smooth", block: "start" });
  } catch (err) {
    setError($("order-error"), err);
  } finally {
    $("order-button").disabled = !state.credentials;
  }
}

function showOrder(order) {
  stopOrderPolling();
  state.order = order;
  sessionStorage.setItem(ORDER_KEY, JSON.stringify(order));
  $("pay-order-id").textContent = order.order_id;
  $("pay-amount").textContent = order.amount_iota.toLocaleString();
  $("pay-amount-value").textContent = String(order.amount_iota);
  $("pay-address").textContent = order.address;
  $("pay-tag").textContent = order.tag;
  const link = paymentLink(order);
  $("pay-link").textContent = link;
  $("pay-link").href = link;
  $("pay-command").textContent = walletCommand(order, state.config);
  const expires = $("pay-expires");
  expires.dateTime = order.expires_at;
  expires.textContent = new Date(order.expires_at).toLocaleString();
  drawQr($("pay-qr"), link);
  renderOrderStatus(order);
  showPaymentDetails(true);
  pollOrder();
}

function showPaymentDetails(visible) {
  show($("payment-details"), visible);
  show($("pay-order-label"), visible);
  show($("payment-empty"), !visible);
}

function renderOrderStatus(order) {
  const status = order.status || "pending";
  const el = $("order-status");
  el.textContent = status;
  el.dataset.status = status;
  $("order-paid").textContent = String(order.paid_iota ?? 0);
  $("order-confirmed").textContent = String(order.confirmed_iota ?? 0);
  $("order-amount").textContent = String(order.amount_iota);
  // Instant access: a pending payment gave access until this time, unless it confirms first.
  const provisional = order.provisional_until ? new Date(order.provisional_until) : null;
  show($("order-provisional"), provisional !== null);
  if (provisional !== null) {
    const until = $("order-provisional-until");
    until.dateTime = order.provisional_until;
    until.textContent = provisional.toLocaleTimeString();
  }
  const reached = STEPS.indexOf(status);
  for (const li of $("order-steps").children) {
    const i = STEPS.indexOf(li.dataset.step);
    li.classList.toggle("done", reached >= 0 && i < reached || status === "confirmed" && i === 2);
    if (i === reached && status !== "confirmed") li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
  }
}

function stopOrderPolling() {
  clearTimeout(state.orderTimer);
  state.orderTimer = null;
}

// Poll once a second (one request at a time) until the whole amount is confirmed; payments
// after expiry still count, so an expired order keeps being watched while it is on screen.
async function pollOrder() {
  const order = state.order;
  if (!order || !state.credentials) return;
  try {
    const fresh = await api.getOrder(state.credentials, order.order_id);
    if (state.order !== order) return; // replaced meanwhile
    const before = order.status;
    const merged = { ...order, ...fresh };
    state.order = merged;
    sessionStorage.setItem(ORDER_KEY, JSON.stringify(merged));
    renderOrderStatus(merged);
    if (merged.status !== before && merged.status === "confirmed") {
      notice(`Payment confirmed: ${merged.confirmed_iota} i. Live access is on.`);
      refreshGrants();
    }
    if (merged.status === "confirmed" && merged.confirmed_iota >= merged.amount_iota) return;
  } catch (err) {
    if (err.status === 404 || err.status === 401) {
      sessionStorage.removeItem(ORDER_KEY);
      return;
    }
    // Network blips: keep polling.
  }
  if (state.order) state.orderTimer = setTimeout(pollOrder, ORDER_POLL_MS);
}

// ---------------------------------------------------------------- grants

function scheduleGrants() {
  clearTimeout(state.grantsTimer);
  state.grantsTimer = setTimeout(refreshGrants, GRANTS_POLL_MS);
}

async function refreshGrants() {
  if (!state.credentials) return;
  try {
    applyGrants(await api.getGrants(state.credentials));
  } catch (err) {
    if (err.status === 401) {
      logout();
      notice("Your session ended; log in again.");
      return;
    }
  }
  scheduleGrants();
}

function applyGrants(grants) {
  state.grants = grants;
  const list = $("grant-list");
  list.replaceChildren();
  if (!state.credentials) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "Log in to see your grants.";
    list.append(li);
  } else if (grants.length === 0) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "No active grant. Order a product to get live access.";
    list.append(li);
  }
  for (const g of grants) {
    const li = document.createElement("li");
    li.dataset.product = g.product_id;
    const title = document.createElement("div");
    title.append(Object.assign(document.createElement("strong"), { textContent: g.product_id }),
      " ", code(g.topic_filter));
    const left = document.createElement("div");
    const countdown = document.createElement("span");
    countdown.className = "countdown";
    countdown.dataset.expires = g.expires_at;
    const until = document.createElement("time");
    until.dateTime = g.expires_at;
    until.textContent = new Date(g.expires_at).toLocaleString();
    left.append(countdown, " left, until ", until);
    li.append(title, left);
    list.append(li);
  }
  tickCountdowns();
  syncRawSubscription();
}

function tickCountdowns() {
  let expired = false;
  for (const el of document.querySelectorAll(".countdown[data-expires]")) {
    const seconds = (Date.parse(el.dataset.expires) - Date.now()) / 1000;
    el.textContent = duration(seconds);
    el.classList.toggle("ending", seconds < 300);
    if (seconds <= 0) expired = true;
  }
  // Access ended: the server drops the grant within a couple of seconds; ask once a second.
  if (expired && state.credentials && Date.now() - state.expiryRefreshAt >= 1000) {
    state.expiryRefreshAt = Date.now();
    refreshGrants();
  }
}

// ---------------------------------------------------------------- live data

function setMqttState(which, s) {
  const pill = $("mqtt-status");
  state[`${which}State`] = s;
  const states = [state.avgState, state.rawState].filter(Boolean);
  const overall = states.includes("error")
    ? "error"
    : states.includes("online")
      ? "online"
      : states.includes("connecting")
        ? "connecting"
        : "offline";
  pill.dataset.state = overall;
  pill.textContent = `MQTT ${overall}${state.rawState === "online" ? " · live stream" : ""}`;
}

function selectLiveProduct(productId) {
  const product = productById(productId);
  if (!product || !state.config) return;
  if (state.liveProduct && state.avgFeed) {
    state.avgFeed.unsubscribe(avgFilterFor(state.liveProduct.topic_filter, state.config));
  }
  state.liveProduct = product;
  chart.clear();
  state.series.clear();
  resetSeriesTable();
  if (!state.avgFeed) {
    state.avgFeed = new Feed(state.config.mqtt_ws_url, {
      name: "avg",
      onMessage: onLiveMessage,
      onState: (s) => setMqttState("avg", s),
    });
  }
  state.avgFeed.subscribe(avgFilterFor(product.topic_filter, state.config));
  if (state.rawFeed && state.rawFilter) state.rawFeed.unsubscribe(state.rawFilter);
  state.rawFilter = null;
  syncRawSubscription();
}

// Subscribe to the live product's raw topics while (and only while) a grant covers them.
function syncRawSubscription() {
  const product = state.liveProduct;
  const grant =
    product && state.credentials
      ? state.grants.find((g) => g.product_id === product.id)
      : undefined;
  const want = grant ? grant.topic_filter : null;
  if (state.rawFilter && state.rawFilter !== want) {
    state.rawFeed?.unsubscribe(state.rawFilter);
    for (const [topic, s] of state.series) {
      if (s.kind === "raw") s.row.querySelector(".updated").textContent = "access ended";
    }
    state.rawFilter = null;
  }
  if (!want) {
    $("live-hint").hidden = false;
    return;
  }
  if (!state.mqttPassword) {
    // A restored session has no password: the live stream needs a fresh login.
    $("live-hint").hidden = false;
    if (!state.reloginNoticed) {
      notice("To watch the live stream here, get a new MQTT password (Account).");
    }
    state.reloginNoticed = true;
    return;
  }
  if (!state.rawFeed) {
    const { username } = state.credentials;
    const password = state.mqttPassword;
    state.rawFeed = new Feed(state.config.mqtt_ws_url, {
      name: "raw",
      username,
      password,
      onMessage: onLiveMessage,
      onState: (s) => {
        setMqttState("raw", s);
        if (s === "online") syncRawSubscription();
      },
    });
  }
  state.rawFilter = want;
  if (state.rawFeed.state(want) === "granted") return;
  state.rawFeed.subscribe(want).then((ok) => {
    // The grant reaches the broker within a second of confirmation; until then it says no.
    if (!ok && state.rawFilter === want) setTimeout(syncRawSubscription, SUBSCRIBE_RETRY_MS);
  });
}

function seriesColor(kind, index) {
  const base = getComputedStyle(document.documentElement)
    .getPropertyValue(kind === "avg" ? "--avg" : "--raw")
    .trim();
  if (index === 0) return base;
  const hues = kind === "avg" ? [200, 260, 170] : [20, 340, 45];
  return `hsl(${hues[index % hues.length]} 70% 50%)`;
}

function resetSeriesTable() {
  const body = $("series-body");
  body.replaceChildren();
  const row = document.createElement("tr");
  row.className = "empty";
  row.append(td("Waiting for data…", "muted"));
  row.firstChild.colSpan = 5;
  body.append(row);
}

function onLiveMessage(topic, text) {
  const product = state.liveProduct;
  if (!product || !state.config) return;
  const avgFilter = avgFilterFor(product.topic_filter, state.config);
  const kind = topicMatches(avgFilter, topic)
    ? "avg"
    : topicMatches(product.topic_filter, topic)
      ? "raw"
      : null;
  if (!kind) return; // a message for a stream no longer shown
  const reading = parseReading(text);
  if (!reading) return;
  let s = state.series.get(topic);
  if (!s) {
    const sensor = topic.split("/").slice(kind === "avg" ? 3 : 2).join("/") || topic;
    const index = [...state.series.values()].filter((x) => x.kind === kind).length;
    const label =
      kind === "avg" ? `${state.config.avg_window} average · ${sensor}` : `raw · ${sensor}`;
    const color = seriesColor(kind, index);
    chart.ensureSeries(topic, { label, color, step: kind === "avg" });
    s = { kind, count: 0, row: seriesRow(topic, kind, label, color) };
    state.series.set(topic, s);
  }
  s.count += 1;
  chart.add(topic, reading.t, reading.value);
  s.row.querySelector(".value").textContent = formatNumber(reading.value);
  s.row.querySelector(".count").textContent = String(s.count);
  s.row.querySelector(".updated").textContent = new Date(reading.t).toLocaleTimeString([], {
    hour12: false,
  });
  if (kind === "raw") $("live-hint").hidden = true;
}

function seriesRow(topic, kind, label, color) {
  const body = $("series-body");
  body.querySelector("tr.empty")?.remove();
  const row = document.createElement("tr");
  row.dataset.kind = kind;
  row.dataset.topic = topic;
  const name = document.createElement("span");
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = color;
  name.append(swatch, label);
  row.append(td(name), td(code(topic)), td("", "num value"), td("0", "num count"),
    td("", "updated"));
  // Averages first, then raw streams.
  if (kind === "avg") body.prepend(row);
  else body.append(row);
  return row;
}

// ---------------------------------------------------------------- copy buttons

async function copyFrom(id, button) {
  const text = $(id).textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard permission (plain http on another host): select the text instead.
    const range = document.createRange();
    range.selectNodeContents($(id));
    const selection = getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    notice("Press Ctrl+C to copy the selected text.");
    return;
  }
  const old = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => (button.textContent = old), 1500);
}

// ---------------------------------------------------------------- start

async function start() {
  $("login-form").addEventListener("submit", onLoginSubmit);
  $("logout").addEventListener("click", logout);
  // Leaving or reloading the page: close the MQTT connections first, so a client that is
  // reconnecting (the broker cuts it when a grant ends) does not write to a closing socket.
  window.addEventListener("pagehide", () => {
    state.rawFeed?.end();
    state.avgFeed?.end();
  });
  $("new-mqtt-password").addEventListener("click", onNewMqttPassword);
  $("order-form").addEventListener("submit", onOrderSubmit);
  $("order-product").addEventListener("change", updateEstimate);
  $("order-hours").addEventListener("input", updateEstimate);
  $("live-product").addEventListener("change", (e) => selectLiveProduct(e.target.value));
  for (const b of document.querySelectorAll("button.copy")) {
    b.addEventListener("click", () => copyFrom(b.dataset.copy, b));
  }
  setInterval(tickCountdowns, 1000);
  renderSession();

  try {
    [state.config, state.products] = await Promise.all([api.getConfig(), api.getProducts()]);
  } catch (err) {
    notice(`Could not load the catalog: ${err.message}`);
    return;
  }
  $("avg-window").textContent = state.config.avg_window;
  renderCatalog();
  initBuy(state.config, state.products); // buying without an account

  const saved = api.loadSession();
  if (saved) {
    try {
      await resume(saved);
    } catch {
      api.clearSession();
    }
  }
  if (state.products.length) selectLiveProduct(state.products[0].id);

  const savedOrder = sessionStorage.getItem(ORDER_KEY);
  if (savedOrder && state.credentials) {
    try {
      showOrder(JSON.parse(savedOrder));
    } catch {
      sessionStorage.removeItem(ORDER_KEY);
    }
  }
  document.body.dataset.ready = "true";
}

start();
