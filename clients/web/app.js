// The class page: one LiveClassClient, rendered. Student and teacher see the same stream; a
// teacher also gets the direct-message panel. Everything hard (reconnects, resume, duplicates,
// tokens) is the client's; this file only draws.
import { LiveClassClient, TokenRefusedError } from "@liveclass/client";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const REACTIONS = ["👍", "🎉", "❓", "👏", "😂", "💡"];

function socketUrl() {
  if (params.get("ws")) return params.get("ws");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/** Where the token comes from: `?token=` (fixed) or `?token_url=` (the school's endpoint). */
function tokenSource() {
  const tokenUrl = params.get("token_url");
  if (tokenUrl) {
    return async () => {
      const response = await fetch(tokenUrl, { credentials: "include" });
      if (!response.ok) throw new Error(`token endpoint answered ${response.status}`);
      const body = await response.json();
      return body.token;
    };
  }
  const token = params.get("token");
  if (!token) return undefined;
  // A fixed token cannot be renewed: once it has expired, stop instead of retrying forever.
  return () => {
    const exp = claimsOf(token).exp;
    if (typeof exp === "number" && exp * 1000 <= Date.now()) throw new TokenRefusedError("the token in the link has expired");
    return token;
  };
}

function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(part), (c) => c.charCodeAt(0))));
  } catch {
    return {};
  }
}

function time(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) node.append(child);
  return node;
}

function start(getToken) {
  // Resume after a reload from where this tab was (the client sends since + epoch).
  const storageKey = `liveclass:position:${params.get("token") ? claimsOf(params.get("token")).class : "default"}`;
  let position;
  try {
    position = JSON.parse(sessionStorage.getItem(storageKey) ?? "null") ?? undefined;
  } catch {
    position = undefined;
  }
  const client = new LiveClassClient({ url: socketUrl(), getToken, ...(position ? { position } : {}) });
  window.liveclass = client; // for the console (and the browser test)

  const comments = $("comments");
  const totals = new Map();
  let me;

  const setStatus = (state, text) => {
    $("status").dataset.state = state;
    $("status").textContent = text;
  };
  const banner = (text, kind = "warn") => {
    $("banner").hidden = !text;
    $("banner").dataset.kind = kind;
    $("banner").textContent = text ?? "";
  };

  client.on("state", ({ state }) => {
    const labels = { connecting: "connecting…", connected: "live", disconnected: "reconnecting…", closed: "disconnected" };
    setStatus(state, labels[state] ?? state);
  });

  client.on("connected", (hello) => {
    me = hello;
    $("room").hidden = false;
    $("join").hidden = true;
    $("class-name").textContent = hello.class;
    $("role").hidden = false;
    $("role").textContent = hello.role === "teacher" ? "teacher" : "student";
    $("role").dataset.role = hello.role;
    document.body.dataset.role = hello.role;
    $("dm-panel").hidden = hello.role !== "teacher";
    $("inbox-title").textContent = hello.role === "teacher" ? "Direct messages sent" : "From your teacher";
    setStatus("connected", `live · ${hello.server}`);
    if (hello.recovered) banner(undefined);
    sessionStorage.setItem(storageKey, JSON.stringify(client.position));
    $("comment-text").focus();
  });

  client.on("disconnected", ({ delayMs }) => {
    setStatus("disconnected", `reconnecting in ${(delayMs / 1000).toFixed(1)} s…`);
  });

  client.on("closed", ({ code }) => {
    const why = {
      4002: "This class is open in another tab or device; this one was closed. Reload to take the seat back.",
      4004: "You were removed from this class.",
      4003: "Your session has expired and could not be renewed. Open the class again from the school's page.",
    };
    if (code !== 1000) banner(why[code] ?? `Disconnected (${code}).`, "error");
  });

  client.on("gap", ({ reason }) => {
    banner(
      reason === "unrecovered"
        ? "Some messages from while you were away could not be recovered. Reload to see the whole class."
        : "The class's history was interrupted; some messages may be missing.",
    );
  });

  client.on("comment", (c) => {
    const author = el("button", { class: "author", type: "button", textContent: c.name ?? c.from, title: c.from });
    author.addEventListener("click", () => {
      if (me?.role === "teacher") {
        $("dm-to").value = c.from;
        $("dm-text").focus();
      }
    });
    const item = el(
      "li",
      { class: c.own ? "comment own" : "comment", "data-id": c.id },
      el("div", { class: "meta" }, author, el("time", { textContent: time(c.ts) })),
      el("p", { class: "text", textContent: c.text }),
    );
    comments.append(item);
    while (comments.children.length > 500) comments.firstElementChild.remove();
    item.scrollIntoView({ block: "end" });
    sessionStorage.setItem(storageKey, JSON.stringify(client.position));
  });

  client.on("presence", ({ count }) => {
    $("presence-count").textContent = String(count);
  });

  client.on("reactions", ({ counts }) => {
    for (const [emoji, n] of Object.entries(counts)) {
      totals.set(emoji, (totals.get(emoji) ?? 0) + n);
      const bubble = el("span", { class: "float", textContent: emoji });
      bubble.style.left = `${10 + Math.random() * 80}%`;
      $("react-buttons").append(bubble);
      setTimeout(() => bubble.remove(), 1_500);
    }
    $("reaction-totals").replaceChildren(
      ...[...totals].sort((a, b) => b[1] - a[1]).map(([e, n]) => el("li", {}, el("span", { textContent: e }), el("b", { textContent: String(n) }))),
    );
  });

  const addDm = (from, text, ts, sent) => {
    const list = $("dms");
    list.querySelector(".empty")?.remove();
    list.prepend(
      el("li", { class: sent ? "dm sent" : "dm" },
        el("div", { class: "meta" }, el("b", { textContent: from }), el("time", { textContent: time(ts) })),
        el("p", { textContent: text })),
    );
  };
  client.on("dm", (dm) => addDm(dm.name ?? dm.from, dm.text, dm.ts, false));

  client.on("error", (e) => {
    if (e.code === "recipient_offline") $("dm-result").textContent = "That user is not in the class right now.";
    else if (e.code === "rate_limited" || e.code === "slow_mode") banner("Slow down a little: your last message was not sent.");
    else if (e.code === "token") banner("Cannot get a token from the school's backend; retrying…");
  });

  for (const emoji of REACTIONS) {
    const button = el("button", { type: "button", class: "react", textContent: emoji, title: `react ${emoji}`, ariaLabel: `react ${emoji}` });
    button.addEventListener("click", () => client.react(emoji));
    $("react-buttons").append(button);
  }

  $("comment-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("comment-text");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    try {
      await client.comment(text);
    } catch (error) {
      input.value ||= text;
      banner(`Not sent: ${error.message}`);
    }
  });

  $("dm-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const to = $("dm-to").value.trim();
    const text = $("dm-text").value.trim();
    try {
      if (client.dm(to, text)) {
        addDm(`to ${to}`, text, Date.now(), true);
        $("dm-text").value = "";
        $("dm-result").textContent = "";
      } else {
        $("dm-result").textContent = "Not connected; try again in a moment.";
      }
    } catch (error) {
      $("dm-result").textContent = error.message;
    }
  });

  client.connect();
}

const getToken = tokenSource();
if (getToken) {
  start(getToken);
} else {
  $("join").hidden = false;
  $("join").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("join-token").value.trim();
    params.set("token", token);
    history.replaceState(null, "", `?${params}`);
    start(() => token);
  });
}
