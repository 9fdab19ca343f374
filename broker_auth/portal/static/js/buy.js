// Buying without an account (sealed purchases). The visitor picks a product and hours and
// chooses an MQTT username and password; the page asks for a quote (an address, an amount, a
// tag and the quote's secret), seals {v, quote_id, address, secret, username, password} to the
// seller's key (js/sealed.js) and shows the message trytes to send with the payment. The
// password and the secret never leave the page in the clear: only the sealed message does, and
// only the seller's service opens it. Then it follows the quote until the MQTT login exists.
import { api } from "./api.js";
import { drawQr, paymentLink, SEED_FILE } from "./payment.js";
import { sealedMessage } from "./sealed.js";

const QUOTE_KEY = "portal.quote";
const POLL_MS = 2000;
export const SELLER_KEY_ALG = "x25519-sealedbox";
// The account rules of broker_auth/schemas.py: USERNAME_PATTERN, and NewPassword's 10 to 128
// characters without control characters.
export const USERNAME_RE = /^[a-z][a-z0-9_-]{2,31}$/;
export const PASSWORD_MIN = 10;
export const PASSWORD_MAX = 128;

export const getSellerKey = () => api("api/seller-key");
export const createQuote = (productId, hours) =>
  api("api/quotes", { method: "POST", body: { product_id: productId, hours } });
export const getQuote = (quoteId) => api(`api/quotes/${encodeURIComponent(quoteId)}`);

// Why this MQTT login cannot be used, or null when it can.
export function loginProblem(username, password) {
  if (!USERNAME_RE.test(username)) {
    return "The username needs 3 to 32 characters: a–z first, then a–z, 0–9, _ or -.";
  }
  const length = [...password].length; // code points, as Python counts them
  if (length < PASSWORD_MIN || length > PASSWORD_MAX) {
    return `The password needs ${PASSWORD_MIN} to ${PASSWORD_MAX} characters.`;
  }
  if (/[\u0000-\u001f\u007f]/.test(password)) {
    return "The password must not contain control characters.";
  }
  return null;
}

// Protocol v1's sealed payload for a quote (POST /api/quotes's answer).
export function sealedPayload(quote, username, password) {
  return {
    v: 1,
    quote_id: quote.quote_id,
    address: quote.address,
    secret: quote.quote_secret,
    username,
    password,
  };
}

// `iot-wallet buy` (see wallet/__main__.py) does the same purchase from a terminal.
export function walletBuyCommand(apiUrl, productId, hours, username, config) {
  return [
    "iot-wallet buy",
    `--api ${apiUrl}`,
    ...(config ? [`--node ${config.iota_node_url}`] : []),
    `--seed-file ${SEED_FILE}`,
    `--product ${productId || "<product>"}`,
    `--hours ${hours || "<hours>"}`,
    `--username ${username || "<username>"}`,
    ...(config && config.iota_mwm ? [`--mwm ${config.iota_mwm}`] : []),
  ].join(" ");
}

const $ = (id) => document.getElementById(id);

function show(el, visible) {
  el.hidden = !visible;
}

function setError(el, err) {
  el.textContent = err ? (err instanceof Error ? err.message : String(err)) : "";
  show(el, Boolean(err));
}

const buy = {
  config: null,
  products: [],
  // {quote (without its secret), message, username, topic_filter}: what the page shows and
  // keeps in sessionStorage. The sealed message is safe to keep: it is sent in public anyway.
  current: null,
  timer: null,
};

function apiUrl() {
  return new URL(".", document.baseURI).href.replace(/\/$/, "");
}

function updateForm() {
  const product = buy.products.find((p) => p.id === $("buy-product").value);
  const hours = Number($("buy-hours").value);
  $("buy-estimate").textContent =
    product && hours > 0
      ? `Costs ${Math.ceil(product.price_iota_per_hour * hours).toLocaleString()} i ` +
        `(${product.price_iota_per_hour.toLocaleString()} i per hour).`
      : "";
  $("buy-wallet-command").textContent = walletBuyCommand(
    apiUrl(),
    $("buy-product").value,
    hours > 0 ? String(hours) : "",
    $("buy-username").value.trim(),
    buy.config,
  );
}

function subscribeCommand(username, topicFilter) {
  let host = "127.0.0.1";
  try {
    host = new URL(buy.config.mqtt_ws_url).hostname || host;
  } catch {
    // keep the default
  }
  return `mosquitto_sub -h ${host} -u ${username} -P '<your password>' ` +
    `-t '${topicFilter}' -q 1 -v`;
}

async function onSubmit(event) {
  event.preventDefault();
  setError($("buy-error"), null);
  const productId = $("buy-product").value;
  const product = buy.products.find((p) => p.id === productId);
  const hours = Number($("buy-hours").value);
  const username = $("buy-username").value.trim();
  const password = $("buy-password").value;
  if (!product) return setError($("buy-error"), "Choose a product.");
  if (!(hours > 0)) return setError($("buy-error"), "Hours must be a number above 0.");
  const problem = loginProblem(username, password);
  if (problem) return setError($("buy-error"), problem);
  $("buy-submit").disabled = true;
  try {
    // The key first: without it no quote is worth taking (each holds one of the seller's
    // addresses).
    const key = await getSellerKey();
    if (!key || key.alg !== SELLER_KEY_ALG || typeof key.public_key !== "string") {
      throw new Error("The seller's key is not one this page can seal to.");
    }
    const quote = await createQuote(productId, hours);
    const message = sealedMessage(sealedPayload(quote, username, password), key.public_key);
    const { quote_secret: _secret, ...shown } = quote;
    $("buy-password").value = "";
    showQuote({ quote: shown, message, username, topic_filter: product.topic_filter });
    $("buy").scrollIntoView({ behavior: "smooth", block: "start" });
  } catch (err) {
    setError($("buy-error"), err);
  } finally {
    $("buy-submit").disabled = false;
  }
}

function showQuote(current) {
  stopPolling();
  buy.current = current;
  sessionStorage.setItem(QUOTE_KEY, JSON.stringify(current));
  const { quote, message } = current;
  $("buy-amount").textContent = String(quote.amount_iota);
  $("buy-amount-text").textContent = quote.amount_iota.toLocaleString();
  $("buy-amount-total").textContent = String(quote.amount_iota);
  $("buy-address").textContent = quote.address;
  $("buy-tag").textContent = quote.tag;
  // textContent, not value: the portal's copy buttons read it (a read-only textarea's value
  // follows it).
  $("buy-message").textContent = message;
  const expires = $("buy-expires");
  expires.dateTime = quote.expires_at;
  expires.textContent = new Date(quote.expires_at).toLocaleString();
  drawQr($("buy-qr"), paymentLink(quote));
  renderStatus({ status: "pending", paid_iota: 0, confirmed_iota: 0 });
  show($("buy-form"), false);
  show($("buy-details"), true);
  poll();
}

function renderStatus(fresh) {
  const status = fresh.status || "pending";
  const el = $("buy-status");
  el.textContent = status;
  el.dataset.status = status;
  $("buy-paid").textContent = String(fresh.paid_iota ?? 0);
  $("buy-confirmed").textContent = String(fresh.confirmed_iota ?? 0);
  setError($("buy-reason"), fresh.reason ? `The payment was not accepted: ${fresh.reason}` : null);
  const username = fresh.username || null;
  show($("buy-login"), Boolean(username));
  if (username) {
    $("buy-login-username").textContent = username;
    $("buy-subscribe").textContent = subscribeCommand(username, buy.current.topic_filter);
    $("buy-ws-url").textContent = buy.config ? buy.config.mqtt_ws_url : "";
  }
}

function stopPolling() {
  clearTimeout(buy.timer);
  buy.timer = null;
}

// Every 2 s, one request at a time, until the login exists and the payment is confirmed, or the
// sealed message was refused.
async function poll() {
  const current = buy.current;
  if (!current) return;
  try {
    const fresh = await getQuote(current.quote.quote_id);
    if (buy.current !== current) return; // replaced meanwhile
    renderStatus(fresh);
    if (fresh.reason || (fresh.username && fresh.status === "confirmed")) return;
  } catch (err) {
    if (buy.current !== current) return;
    if (err.status === 404) {
      setError($("buy-reason"), "This quote is no longer known.");
      sessionStorage.removeItem(QUOTE_KEY);
      return;
    }
    // Network blips: keep polling.
  }
  buy.timer = setTimeout(poll, POLL_MS);
}

function reset() {
  stopPolling();
  buy.current = null;
  sessionStorage.removeItem(QUOTE_KEY);
  $("buy-message").textContent = "";
  setError($("buy-reason"), null);
  show($("buy-login"), false);
  show($("buy-details"), false);
  show($("buy-form"), true);
  $("buy-username").focus();
}

// Called once the portal has its configuration and the catalog.
export function initBuy(config, products) {
  buy.config = config;
  buy.products = products;
  const select = $("buy-product");
  select.replaceChildren(...products.map((p) => new Option(`${p.id} (${p.topic_filter})`, p.id)));
  $("buy-form").addEventListener("submit", onSubmit);
  for (const id of ["buy-product", "buy-hours", "buy-username"]) {
    $(id).addEventListener("input", updateForm);
  }
  $("buy-new").addEventListener("click", reset);
  updateForm();
  try {
    const saved = JSON.parse(sessionStorage.getItem(QUOTE_KEY) || "null");
    if (saved && saved.quote && typeof saved.message === "string") showQuote(saved);
  } catch {
    sessionStorage.removeItem(QUOTE_KEY);
  }
}
