// JSON API client. The buyer logs in once (POST /api/sessions); the session token lives in
// sessionStorage (gone when the tab closes) and goes out as a Bearer token. No password is kept.
const SESSION_KEY = "portal.session";

export class ApiError extends Error {
  constructor(status, detail) {
    super(formatDetail(detail) || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

// FastAPI's 422 detail is a list of pydantic errors; everything else is a string.
function formatDetail(detail) {
  if (Array.isArray(detail)) {
    return detail
      .map((e) => {
        const where = Array.isArray(e.loc) ? e.loc.filter((p) => p !== "body").join(".") : "";
        return where ? `${where}: ${e.msg}` : String(e.msg ?? e);
      })
      .join("; ");
  }
  if (detail && typeof detail === "object") return JSON.stringify(detail);
  return detail ? String(detail) : "";
}

// The session: username, token and expiry from POST /api/sessions. Never a password.
export function loadSession() {
  try {
    const c = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    return c && typeof c.username === "string" && typeof c.token === "string" ? c : null;
  } catch {
    return null;
  }
}

export function saveSession(session) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

export function clearSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

// Paths are relative so the portal also works behind a reverse proxy under a path prefix.
export async function api(path, { method = "GET", body, auth } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth) headers.Authorization = `Bearer ${auth.token}`;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!response.ok) throw new ApiError(response.status, data && data.detail !== undefined ? data.detail : data);
  return data;
}

export const getConfig = () => api("portal-config.json");
export const getProducts = () => api("api/products");
export const register = (username, password) =>
  api("api/accounts", { method: "POST", body: { username, password } });
export async function createSession(username, password) {
  const { token, expires_at } = await api("api/sessions", {
    method: "POST",
    body: { username, password },
  });
  return { username, token, expires_at };
}
export const rotateMqttPassword = (auth) =>
  api("api/account/mqtt-password", { method: "POST", auth });
export const deleteSession = (auth) =>
  api("api/sessions/current", { method: "DELETE", auth });
export const getGrants = (auth) => api("api/grants", { auth });
export const createOrder = (auth, productId, hours) =>
  api("api/orders", { method: "POST", body: { product_id: productId, hours }, auth });
export const getOrder = (auth, orderId) =>
  api(`api/orders/${encodeURIComponent(orderId)}`, { auth });
