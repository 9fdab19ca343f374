// MQTT over WebSockets with MQTT.js (vendored). One Feed is one connection: anonymous for the
// free averages, the buyer's credentials for granted live topics.
import mqtt from "../vendor/mqtt.esm.js";

const randomHex = (bytes) =>
  Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) =>
    b.toString(16).padStart(2, "0"),
  ).join("");

export class Feed {
  constructor(url, { username, password, onMessage, onState, name }) {
    this.url = url;
    this.options = {
      // The broker reserves ids `<username>:...` to that user; anonymous ids have no ':'.
      clientId: `${username ? `${username}:` : ""}web-${name}-${randomHex(8)}`,
      username,
      password,
      clean: true,
      keepalive: 30,
      connectTimeout: 5000,
      reconnectPeriod: 2000,
      protocolVersion: 4,
      // We re-subscribe ourselves on every connect: the wanted set may have changed, and a
      // subscription the broker denied must be retried when a grant appears.
      resubscribe: false,
    };
    this.onMessage = onMessage;
    this.onState = onState || (() => {});
    this.wanted = new Map(); // filter -> "pending" | "granted" | "denied"
    this.client = null;
  }

  connect() {
    if (this.client) return;
    this.onState("connecting");
    this.client = mqtt.connect(this.url, this.options);
    this.client.on("connect", () => {
      this.onState("online");
      for (const filter of this.wanted.keys()) this.#subscribe(filter);
    });
    this.client.on("reconnect", () => this.onState("connecting"));
    this.client.on("offline", () => this.onState("offline"));
    this.client.on("error", (err) => this.onState("error", err));
    this.client.on("message", (topic, payload, packet) =>
      this.onMessage(topic, new TextDecoder().decode(payload), packet),
    );
  }

  // Resolves true when the broker granted the subscription, false when its ACL denied it.
  subscribe(filter) {
    if (!this.wanted.has(filter)) this.wanted.set(filter, "pending");
    this.connect();
    if (!this.client.connected) return Promise.resolve(false);
    return this.#subscribe(filter);
  }

  #subscribe(filter) {
    return new Promise((resolve) => {
      this.client.subscribe(filter, { qos: 0 }, (err, granted) => {
        // MQTT 3.1.1 SUBACK 0x80 (128) = failure, here: not allowed by the broker's ACL.
        const ok = !err && Array.isArray(granted) && granted.every((g) => g.qos < 128);
        if (this.wanted.has(filter)) this.wanted.set(filter, ok ? "granted" : "denied");
        resolve(ok);
      });
    });
  }

  state(filter) {
    return this.wanted.get(filter);
  }

  unsubscribe(filter) {
    if (!this.wanted.delete(filter)) return;
    if (this.client && this.client.connected) this.client.unsubscribe(filter);
  }

  end() {
    this.wanted.clear();
    if (this.client) this.client.end(true);
    this.client = null;
    this.onState("offline");
  }
}

// Does an MQTT topic filter match a topic? (`+` one level, `#` the rest.)
export function topicMatches(filter, topic) {
  const f = filter.split("/");
  const t = topic.split("/");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true;
    if (i >= t.length) return false;
    if (f[i] !== "+" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

// The free average topics for a product's live filter: live/plug-1/# -> avg/1m/plug-1/#.
export function avgFilterFor(topicFilter, config) {
  const live = `${config.live_topic_prefix}/`;
  const rest = topicFilter.startsWith(live) ? topicFilter.slice(live.length) : "#";
  return `${config.avg_topic_prefix}/${config.avg_window}/${rest}`;
}

// A reading's value and time: a bare number, or JSON {"value", "ts"} where ts is epoch
// seconds, epoch milliseconds or RFC 3339. Returns null for anything else.
export function parseReading(text, arrivedMs = Date.now()) {
  let value;
  let ts;
  let extra = {};
  const trimmed = text.trim();
  if (/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(trimmed)) {
    value = Number(trimmed);
  } else {
    try {
      extra = JSON.parse(trimmed);
    } catch {
      return null;
    }
    if (!extra || typeof extra !== "object") return null;
    value = Number(extra.value);
    ts = extra.ts;
  }
  if (!Number.isFinite(value)) return null;
  return { value, t: parseTs(ts, arrivedMs), count: extra.count, window: extra.window };
}

function parseTs(ts, fallback) {
  let ms = NaN;
  if (typeof ts === "number") ms = Number.isInteger(ts) && ts > 1e11 ? ts : ts * 1000;
  else if (typeof ts === "string") ms = Date.parse(ts);
  // Clocks disagree; a wildly off stamp would put the point outside the chart for good.
  if (!Number.isFinite(ms) || ms > fallback + 300_000 || ms < fallback - 86_400_000) return fallback;
  return ms;
}
