// JSON API client. Buyer credentials live in sessionStorage (gone when the tab closes) and go
// out as HTTP Basic on each call, the way the API expects them.
const CREDENTIALS_KEY = "portal.credentials";

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

export function loadCredentials() {
  try {
    const c = JSON.parse(sessionStorage.getItem(CREDENTIALS_KEY) || "null");
    return c && typeof c.username === "string" && typeof c.password === "string" ? c : null;
  } catch {
    return null;
  }
}

export function saveCredentials(credentials) {
  sessionStorage.setItem(CREDENTIALS_KEY, JSON.stringify(credentials));
}

export function clearCredentials() {
  sessionStorage.removeItem(CREDENTIALS_KEY);
}

function basic({ username, password }) {
  // btoa only takes Latin-1: encode as UTF-8 first so any password works.
  const bytes = new TextEncoder().encode(`${username}:${password}`);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return `Basic ${btoa(binary)}`;
}

// Paths are relative so the portal also works behind a reverse proxy under a path prefix.
export async function api(path, { method = "GET", body, auth } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth) headers.Authorization = basic(auth);
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
export const getGrants = (auth) => api("api/grants", { auth });
export const createOrder = (auth, productId, hours) =>
  api("api/orders", { method: "POST", body: { product_id: productId, hours }, auth });
export const getOrder = (auth, orderId) =>
  api(`api/orders/${encodeURIComponent(orderId)}`, { auth });
