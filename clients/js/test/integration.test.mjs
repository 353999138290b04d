// The client against the real thing: liveclass-socket servers sharing a real redis-server on
// loopback. Join, send, receive; a server SIGKILLed and restarted; a drain; a token that
// expires; 4002; recovery that cannot be exact.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { LiveClassClient } from "../dist/index.js";
import { Stack, mintToken, tappedWebSocket, until } from "./stack.mjs";

const stack = new Stack();
let s1;
let s2;
const clients = [];

before(async () => {
  await stack.redis();
  // Generous per-user budgets: the tests send bursts from one user on purpose.
  const args = ["--rate", "20", "--burst", "50", "--user-rate", "50", "--user-burst", "100", "--drain-window", "3s"];
  s1 = await stack.socket("s1", { args });
  s2 = await stack.socket("s2", { args });
});

after(async () => {
  for (const client of clients) client.close();
  await stack.stop();
});

let classSeq = 0;
function newClass() {
  return `school/js-${process.pid}-${++classSeq}`;
}

/** A client with every event recorded, and a way to wait for one. */
function join({ user, role = "student", klass, url, tokenClaims = () => ({}), options = {} }) {
  const tokens = [];
  const client = new LiveClassClient({
    url: typeof url === "function" ? url : () => url,
    getToken: async () => {
      const token = mintToken({ sub: user, class: klass, role, name: user.toUpperCase(), ...tokenClaims(tokens.length) });
      tokens.push({ at: Date.now(), token });
      return token;
    },
    ...options,
  });
  const events = [];
  for (const name of ["state", "connected", "disconnected", "closed", "comment", "reactions", "dm", "presence", "gap", "error"]) {
    client.on(name, (event) => events.push({ type: name, at: Date.now(), ...event }));
  }
  const of = (name) => events.filter((e) => e.type === name);
  const waitFor = (what, name, predicate = () => true, timeoutMs = 10_000) =>
    until(`${user}: ${what}`, () => of(name).find(predicate), { timeoutMs, everyMs: 20 }).catch((error) => {
      const recent = events.slice(-12).map((e) => JSON.stringify(e)).join("\n  ");
      throw new Error(`${error.message}\n  ${user}'s last events:\n  ${recent}`);
    });
  clients.push(client);
  client.connect();
  return { client, events, of, waitFor, tokens, user };
}

const texts = (c) => c.of("comment").map((e) => e.text);

test("join, send, receive: comments, presence, reactions and a teacher's DM across two servers", async () => {
  const klass = newClass();
  const teacher = join({ user: "t1", role: "teacher", klass, url: s1.url });
  const ada = join({ user: "ada", klass, url: s1.url });
  const bob = join({ user: "bob", klass, url: s2.url });
  for (const c of [teacher, ada, bob]) await c.waitFor("connected", "connected");
  assert.equal(teacher.client.user.role, "teacher");

  for (const c of [teacher, ada, bob]) await c.waitFor("presence 3", "presence", (e) => e.count === 3);

  const stored = await ada.client.comment("hello from ada");
  assert.match(stored.id, /^\d+-\d+$/);
  assert.equal(stored.from, "ada");
  assert.equal(stored.name, "ADA");
  for (const c of [teacher, bob]) await c.waitFor("ada's comment", "comment", (e) => e.id === stored.id);
  assert.equal(bob.of("comment").find((e) => e.id === stored.id).own, false);
  assert.equal(ada.of("comment").find((e) => e.id === stored.id).own, true);

  assert.equal(teacher.client.dm("bob", "stay after class"), true);
  const dm = await bob.waitFor("the DM", "dm");
  assert.deepEqual([dm.from, dm.name, dm.text], ["t1", "T1", "stay after class"]);
  assert.equal(ada.of("dm").length, 0, "a DM reaches its recipient only");

  teacher.client.dm("nobody", "hello?");
  await teacher.waitFor("recipient_offline", "error", (e) => e.code === "recipient_offline");
  assert.throws(() => ada.client.dm("bob", "psst"), (e) => e.code === "forbidden");

  ada.client.react("👍");
  bob.client.react("👍");
  bob.client.react("🎉");
  const counted = await teacher.waitFor("reactions from both servers", "reactions", () => {
    const sum = {};
    for (const r of teacher.of("reactions")) for (const [k, v] of Object.entries(r.counts)) sum[k] = (sum[k] ?? 0) + v;
    return sum["👍"] === 2 && sum["🎉"] === 1;
  });
  assert.ok(counted);

  for (const c of [teacher, ada, bob]) c.client.close();
});

test("a server SIGKILLed and restarted: the client reconnects with jitter and recovers every missed comment once", async () => {
  const klass = newClass();
  let victim = s1;
  const port = victim.port;
  const ada = join({ user: "ada", klass, url: () => `ws://127.0.0.1:${port}/ws`, options: { maxReconnectDelayMs: 2_000 } });
  const bob = join({ user: "bob", klass, url: s2.url });
  await ada.waitFor("connected", "connected");
  await bob.waitFor("connected", "connected");
  const before = await bob.client.comment("before the crash");
  await ada.waitFor("the first comment", "comment", (e) => e.id === before.id);

  await victim.child.kill("SIGKILL");
  await ada.waitFor("the disconnect", "disconnected");
  const missed = [];
  for (let i = 0; i < 5; i++) missed.push(await bob.client.comment(`while down ${i}`));
  // Ada comments while disconnected: it waits and is sent after the reconnect.
  const adaWhileDown = ada.client.comment("ada, typed while down");

  // Let a few attempts be refused (connection refused) before the pod comes back.
  await ada.waitFor("three refused attempts", "disconnected", () => ada.of("disconnected").length >= 3, 15_000);
  victim = await stack.socket("s1", { port });
  s1 = victim;

  const resumed = await ada.waitFor("the resumed connection", "connected", (e) => e.resumed, 20_000);
  assert.equal(resumed.recovered, true);
  for (const m of missed) await ada.waitFor(`missed ${m.id}`, "comment", (e) => e.id === m.id);
  const own = await adaWhileDown;
  await bob.waitFor("ada's queued comment", "comment", (e) => e.id === own.id);

  // Every comment once, in order.
  const ids = ada.of("comment").map((e) => e.id);
  assert.deepEqual(ids, [before.id, ...missed.map((m) => m.id), own.id]);
  assert.equal(new Set(ids).size, ids.length);
  assert.equal(bob.of("comment").filter((e) => e.text === "ada, typed while down").length, 1);

  // The delays were drawn with full jitter under a doubling ceiling.
  const delays = ada.of("disconnected").map((e) => e.delayMs);
  assert.ok(delays.every((d, i) => d >= 0 && d <= Math.min(2_000, 500 * 2 ** i)), `delays ${delays}`);
  assert.ok(new Set(delays).size > 1, `jittered, not fixed: ${delays}`);
  ada.client.close();
  bob.client.close();
});

test("a drain: the client reconnects after reconnect.after_ms, with since, and misses nothing", async () => {
  const klass = newClass();
  const draining = await stack.socket("drain-me", { args: ["--drain-window", "2s"] });
  const log = [];
  let target = draining.url;
  const ada = join({ user: "ada", klass, url: () => target, options: { WebSocket: tappedWebSocket(log) } });
  const bob = join({ user: "bob", klass, url: s2.url });
  await ada.waitFor("connected", "connected");
  await bob.waitFor("connected", "connected");
  const first = await bob.client.comment("before the drain");
  await ada.waitFor("first", "comment", (e) => e.id === first.id);

  target = s2.url; // the balancer would send the reconnect to a ready pod
  await draining.child.kill("SIGTERM");
  const gone = await ada.waitFor("the drain's close", "disconnected", () => true, 10_000);
  assert.equal(gone.code, 1001);
  const reconnect = log.find((e) => e.frame?.t === "reconnect");
  assert.ok(reconnect, "the server sent reconnect");
  assert.equal(gone.delayMs, reconnect.frame.after_ms, "waits exactly what the server asked");
  const during = await bob.client.comment("during the drain");
  const resumed = await ada.waitFor("resumed on the other server", "connected", (e) => e.resumed);
  assert.equal(resumed.server, "s2");
  assert.equal(resumed.recovered, true);
  const reopened = log.filter((e) => e.opened).at(-1);
  assert.ok(
    reopened.at - reconnect.at >= reconnect.frame.after_ms - 5,
    `reconnected ${reopened.at - reconnect.at} ms after the frame; after_ms ${reconnect.frame.after_ms}`,
  );
  assert.equal(new URL(reopened.opened).searchParams.get("since"), first.id);
  await ada.waitFor("the comment during the drain", "comment", (e) => e.id === during.id);
  assert.deepEqual(texts(ada), ["before the drain", "during the drain"]);
  assert.deepEqual(await draining.child.exited.then((x) => x.code), 0);
  ada.client.close();
  bob.client.close();
});

test("a token that expires: refreshed before exp, reconnected after 4003 without losing a comment", async () => {
  const klass = newClass();
  // The first token lives 4 s; the next ones an hour.
  const ada = join({
    user: "ada",
    klass,
    url: s1.url,
    tokenClaims: (n) => (n === 0 ? { exp: Math.floor(Date.now() / 1000) + 4 } : {}),
  });
  const bob = join({ user: "bob", klass, url: s2.url });
  await ada.waitFor("connected", "connected");
  await bob.waitFor("connected", "connected");
  const firstExp = JSON.parse(Buffer.from(ada.tokens[0].token.split(".")[1], "base64url")).exp * 1000;

  // Bob talks all the way through Ada's expiry; Ada comments right at it.
  const sent = [];
  let adaAtExpiry;
  const deadline = firstExp + 2_000;
  while (Date.now() < deadline) {
    sent.push(await bob.client.comment(`tick ${sent.length}`));
    if (!adaAtExpiry && Date.now() >= firstExp - 150) adaAtExpiry = ada.client.comment("ada at expiry");
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const expired = await ada.waitFor("4003", "disconnected", (e) => e.code === 4003);
  assert.ok(ada.tokens.length >= 2, "a new token was fetched");
  assert.ok(ada.tokens[1].at < expired.at, "before the server closed at exp");
  assert.equal(expired.delayMs, 0);
  await ada.waitFor("reconnected", "connected", (e) => e.resumed);
  const own = await adaAtExpiry;
  await bob.waitFor("ada's comment at expiry", "comment", (e) => e.id === own.id);
  for (const m of sent) await ada.waitFor(`comment ${m.id}`, "comment", (e) => e.id === m.id);
  const got = ada.of("comment").filter((e) => e.from === "bob").map((e) => e.id);
  assert.deepEqual(got, sent.map((m) => m.id), "every comment once, in order");
  assert.equal(ada.of("gap").length, 0);
  ada.client.close();
  bob.client.close();
});

test("4002: the oldest of too many connections of one user is closed for good", async () => {
  const klass = newClass();
  const tabs = [];
  for (let i = 0; i < 4; i++) {
    const tab = join({ user: "ada", klass, url: i % 2 ? s2.url : s1.url });
    await tab.waitFor(`tab ${i} connected`, "connected");
    tabs.push(tab);
  }
  const closed = await tabs[0].waitFor("4002", "closed");
  assert.equal(closed.code, 4002);
  assert.equal(tabs[0].client.state, "closed");
  // It stays closed: no reconnect storm between tabs.
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  assert.equal(tabs[0].of("connected").length, 1);
  assert.equal(tabs[0].client.state, "closed");
  for (const tab of tabs.slice(1)) assert.equal(tab.client.state, "connected");
  await assert.rejects(tabs[0].client.comment("still there?"), (e) => e.code === "closed");
  for (const tab of tabs) tab.client.close();
});

test("a position the server cannot recover from is reported as a gap", async () => {
  const klass = newClass();
  const bob = join({ user: "bob", klass, url: s1.url });
  await bob.waitFor("connected", "connected");
  const said = await bob.client.comment("said before ada came back");
  const ada = join({
    user: "ada",
    klass,
    url: s2.url,
    options: { position: { epoch: "someotherepoch", lastId: "1-0" } },
  });
  const hello = await ada.waitFor("connected", "connected");
  assert.equal(hello.recovered, false);
  const gap = await ada.waitFor("gap", "gap");
  assert.equal(gap.reason, "unrecovered");
  assert.equal(gap.position.lastId, said.id);
  assert.notEqual(gap.position.epoch, "someotherepoch");
  const next = await bob.client.comment("after");
  await ada.waitFor("the live comment", "comment", (e) => e.id === next.id);
  assert.deepEqual(texts(ada), ["after"], "nothing replayed, live from hello's position");
  ada.client.close();
  bob.client.close();
});
