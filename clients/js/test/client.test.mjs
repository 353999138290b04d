// Unit tests of the client's logic against a fake WebSocket and a fake clock: backoff, every
// close code of PROTOCOL.md, resume and duplicates, gaps, tokens, comments and pings.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  LiveClassClient,
  LiveClassError,
  TokenRefusedError,
  backoffDelay,
  compareIds,
  tokenExpiry,
} from "../dist/index.js";
import { FakeClock, fakeToken, fakeWebSocketClass, flush } from "./fake.mjs";

function setup(options = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const tokens = [];
  const exp = options.tokenLifetimeS ?? 3600;
  const getToken =
    options.getToken ??
    (async () => {
      const token = fakeToken({ sub: "u1", exp: Math.floor(clock.now() / 1000) + exp, n: tokens.length });
      tokens.push(token);
      return token;
    });
  const randoms = options.randoms ? [...options.randoms] : undefined;
  const client = new LiveClassClient({
    url: "ws://server.test/ws",
    getToken,
    WebSocket: FakeWebSocket,
    clock,
    random: randoms ? () => (randoms.length ? randoms.shift() : 0.5) : () => 0.5,
    ...options.client,
  });
  const events = [];
  for (const name of ["state", "connected", "disconnected", "closed", "comment", "reactions", "dm", "presence", "gap", "error"]) {
    client.on(name, (event) => events.push({ type: name, ...event }));
  }
  const of = (name) => events.filter((e) => e.type === name);
  const last = () => sockets[sockets.length - 1];
  return { clock, client, sockets, tokens, events, of, last };
}

async function connected(ctx, hello = {}) {
  ctx.client.connect();
  await flush();
  ctx.last().hello(hello);
}

test("backoff is full jitter under a doubling, capped ceiling", () => {
  const ceilings = [];
  for (let attempt = 0; attempt < 8; attempt++) ceilings.push(backoffDelay(attempt, 500, 20_000, () => 0.999999));
  assert.deepEqual(ceilings, [499, 999, 1999, 3999, 7999, 15999, 19999, 19999]);
  assert.equal(backoffDelay(3, 500, 20_000, () => 0), 0);
  assert.equal(backoffDelay(3, 500, 20_000, () => 0.25), 1000);
  assert.equal(backoffDelay(1000, 500, 20_000, () => 0.5), 10_000, "no overflow for huge attempts");
});

test("message ids compare exactly, past 2^53", () => {
  assert.ok(compareIds("100-0", "99-9") > 0);
  assert.ok(compareIds("100-2", "100-10") < 0);
  assert.equal(compareIds("100-2", "100-2"), 0);
  assert.ok(compareIds("18446744073709551615-1", "18446744073709551614-9") > 0);
  assert.ok(compareIds("9007199254740993-0", "9007199254740992-0") > 0);
});

test("tokenExpiry reads exp from a JWT", () => {
  assert.equal(tokenExpiry(fakeToken({ exp: 1700000000 })), 1700000000_000);
  assert.equal(tokenExpiry("nope"), undefined);
  assert.equal(tokenExpiry(fakeToken({ sub: "x" })), undefined);
});

test("connects with the token; refused handshakes back off with growing jittered delays", async () => {
  const ctx = setup({ randoms: [0.5, 0.999, 0.999, 0.999, 0.999, 0.999, 0.999] });
  ctx.client.connect();
  await flush();
  assert.equal(ctx.sockets.length, 1);
  assert.equal(ctx.last().url.searchParams.get("token"), ctx.tokens[0]);
  assert.equal(ctx.last().url.searchParams.get("since"), null, "no since on a first connection");
  assert.equal(ctx.client.state, "connecting");
  const delays = [];
  for (let i = 0; i < 6; i++) {
    ctx.last().serverClose(1006);
    const d = ctx.of("disconnected").at(-1);
    delays.push(d.delayMs);
    assert.equal(d.wasConnected, false);
    await ctx.clock.advance(d.delayMs - 1);
    assert.equal(ctx.sockets.length, i + 1, "does not reconnect early");
    await ctx.clock.advance(1);
    assert.equal(ctx.sockets.length, i + 2, "reconnects when the delay is over");
  }
  assert.deepEqual(delays, [250, 999, 1998, 3996, 7992, 15984]);
  // Refused twice in a row with the same token: a new one is fetched.
  assert.ok(ctx.tokens.length >= 2, `tokens fetched: ${ctx.tokens.length}`);
});

test("an error without a close event (undici) still ends the attempt", async () => {
  const ctx = setup();
  ctx.client.connect();
  await flush();
  ctx.last().failWithoutClose();
  await ctx.clock.advance(49);
  assert.equal(ctx.of("disconnected").length, 0);
  await ctx.clock.advance(1);
  assert.equal(ctx.of("disconnected")[0].reason, "error");
  await ctx.clock.advance(ctx.of("disconnected")[0].delayMs);
  assert.equal(ctx.sockets.length, 2);
  // With the close event right behind the error (browsers), the close's code wins.
  ctx.last().failWithoutClose();
  ctx.last().serverClose(1006, "");
  await ctx.clock.advance(100);
  assert.deepEqual(ctx.of("disconnected").map((d) => d.reason), ["error", ""]);
});

test("hello connects; a stable connection resets the backoff", async () => {
  const ctx = setup({ randoms: Array(20).fill(0.999) });
  await connected(ctx);
  assert.equal(ctx.client.state, "connected");
  const c = ctx.of("connected")[0];
  assert.equal(c.recovered, true);
  assert.equal(c.resumed, false);
  assert.deepEqual(c.position, { epoch: "E1", lastId: "100-0" });
  // Fails fast three times (unstable): the ceiling grows.
  for (let i = 0; i < 3; i++) {
    ctx.last().serverClose(1011);
    await ctx.clock.advance(ctx.of("disconnected").at(-1).delayMs);
    ctx.last().hello();
  }
  assert.deepEqual(ctx.of("disconnected").map((d) => d.delayMs), [499, 999, 1998]);
  // Stays up past stableAfterMs: back to the first ceiling.
  await ctx.clock.advance(6_000);
  ctx.last().serverClose(1011);
  assert.equal(ctx.of("disconnected").at(-1).delayMs, 499);
});

test("resumes with since and epoch; drops duplicates and anything not newer", async () => {
  const ctx = setup();
  await connected(ctx);
  ctx.last().receive({ t: "comment", id: "101-0", from: "u2", text: "a", ts: 1 });
  ctx.last().receive({ t: "comment", id: "102-0", from: "u2", text: "b", ts: 2 });
  ctx.last().serverClose(1006);
  await ctx.clock.advance(ctx.of("disconnected").at(-1).delayMs);
  const ws = ctx.last();
  assert.equal(ws.url.searchParams.get("since"), "102-0");
  assert.equal(ws.url.searchParams.get("epoch"), "E1");
  ws.hello({ last_id: "104-0" });
  const c = ctx.of("connected").at(-1);
  assert.equal(c.resumed, true);
  assert.equal(c.recovered, true);
  assert.deepEqual(c.position, { epoch: "E1", lastId: "102-0" }, "the replay advances the position");
  // The replay, overlapping what was seen, then live.
  for (const id of ["102-0", "103-0", "104-0", "103-0", "104-0", "105-0"]) {
    ws.receive({ t: "comment", id, from: "u2", text: id, ts: 3 });
  }
  assert.deepEqual(ctx.of("comment").map((e) => e.id), ["101-0", "102-0", "103-0", "104-0", "105-0"]);
  assert.equal(ctx.client.duplicatesDropped, 3);
  assert.deepEqual(ctx.client.position, { epoch: "E1", lastId: "105-0" });
});

test("recovered:false is reported as a gap and the position moves to hello's", async () => {
  const ctx = setup({ client: { position: { epoch: "OLD", lastId: "50-0" } } });
  ctx.client.connect();
  await flush();
  assert.equal(ctx.last().url.searchParams.get("since"), "50-0");
  assert.equal(ctx.last().url.searchParams.get("epoch"), "OLD");
  ctx.last().hello({ recovered: false, epoch: "NEW", last_id: "900-1" });
  assert.equal(ctx.of("connected")[0].recovered, false);
  const [gap] = ctx.of("gap");
  assert.equal(gap.reason, "unrecovered");
  assert.deepEqual(gap.position, { epoch: "NEW", lastId: "900-1" });
  assert.deepEqual(gap.previous, { epoch: "OLD", lastId: "50-0" });
  ctx.last().receive({ t: "comment", id: "900-1", from: "u2", text: "old", ts: 1 });
  ctx.last().receive({ t: "comment", id: "901-0", from: "u2", text: "new", ts: 1 });
  assert.deepEqual(ctx.of("comment").map((e) => e.id), ["901-0"]);
});

test("an epoch change with recovered:true is still treated as not recovered", async () => {
  const ctx = setup({ client: { position: { epoch: "OLD", lastId: "50-0" } } });
  ctx.client.connect();
  await flush();
  ctx.last().hello({ recovered: true, epoch: "OTHER" });
  assert.equal(ctx.of("gap").length, 1);
  assert.equal(ctx.of("connected")[0].recovered, false);
});

test("a gap frame is an event and the new position", async () => {
  const ctx = setup();
  await connected(ctx);
  ctx.last().receive({ t: "gap", reason: "history_lost", epoch: "E2", last_id: "7-0" });
  const [gap] = ctx.of("gap");
  assert.equal(gap.reason, "history_lost");
  assert.deepEqual(ctx.client.position, { epoch: "E2", lastId: "7-0" });
  ctx.last().receive({ t: "comment", id: "8-0", from: "u2", text: "after", ts: 1 });
  assert.equal(ctx.of("comment").length, 1, "ids of the new epoch are accepted after the gap");
});

test("4002 replaced is final unless asked", async () => {
  const ctx = setup();
  await connected(ctx);
  ctx.last().serverClose(4002, "replaced");
  assert.equal(ctx.client.state, "closed");
  assert.deepEqual(ctx.of("closed").map((e) => e.code), [4002]);
  await ctx.clock.advance(120_000);
  assert.equal(ctx.sockets.length, 1, "never reconnects on its own");

  const again = setup({ client: { reconnectOnReplaced: true } });
  await connected(again);
  again.last().serverClose(4002, "replaced");
  assert.equal(again.client.state, "disconnected");
  await again.clock.advance(again.of("disconnected")[0].delayMs);
  assert.equal(again.sockets.length, 2);
});

test("4004 kicked is final", async () => {
  const ctx = setup();
  await connected(ctx);
  const pending = ctx.client.comment("hi");
  ctx.last().serverClose(4004, "kicked");
  assert.equal(ctx.client.state, "closed");
  await assert.rejects(pending, (e) => e instanceof LiveClassError && e.code === "closed");
  await ctx.clock.advance(120_000);
  assert.equal(ctx.sockets.length, 1);
});

test("1008 flood and 4001 slow_consumer back off by the penalty on top of backoff", async () => {
  for (const code of [1008, 4001]) {
    const ctx = setup({ randoms: [0.5, 0, 0] });
    await connected(ctx);
    ctx.last().serverClose(code);
    const d = ctx.of("disconnected")[0];
    assert.equal(d.code, code);
    assert.ok(d.delayMs >= 2_500, `${code}: waits at least half the penalty, got ${d.delayMs}`);
    await ctx.clock.advance(d.delayMs - 1);
    assert.equal(ctx.sockets.length, 1);
    await ctx.clock.advance(1);
    assert.equal(ctx.sockets.length, 2);
    assert.equal(ctx.last().url.searchParams.get("since"), "100-0");
  }
});

test("1013 try_again_later reconnects with backoff and since", async () => {
  const ctx = setup();
  await connected(ctx);
  ctx.last().serverClose(1013, "try_again_later");
  const d = ctx.of("disconnected")[0];
  assert.equal(d.delayMs, 250);
  await ctx.clock.advance(250);
  assert.equal(ctx.sockets.length, 2);
  assert.equal(ctx.last().url.searchParams.get("since"), "100-0");
});

test("a drain reconnects after exactly reconnect.after_ms, with since", async () => {
  const ctx = setup();
  await connected(ctx);
  ctx.last().receive({ t: "reconnect", after_ms: 2350 });
  ctx.last().serverClose(1001, "draining");
  assert.equal(ctx.of("disconnected")[0].delayMs, 2350);
  await ctx.clock.advance(2349);
  assert.equal(ctx.sockets.length, 1);
  await ctx.clock.advance(1);
  assert.equal(ctx.sockets.length, 2);
  assert.equal(ctx.last().url.searchParams.get("since"), "100-0");
  // after_ms belongs to that connection only: the next 1001 without it backs off.
  ctx.last().hello();
  ctx.last().serverClose(1001);
  assert.equal(ctx.of("disconnected")[1].delayMs, 250);
});

test("the token is refreshed before exp, and 4003 reconnects at once with the new one", async () => {
  const ctx = setup({ tokenLifetimeS: 120, client: { pingIntervalMs: 0 } });
  await connected(ctx);
  assert.equal(ctx.tokens.length, 1);
  // The refresh margin is 30 s before exp (120 s token): nothing at 89 s, a fetch at 90 s.
  await ctx.clock.advance(89_000);
  assert.equal(ctx.tokens.length, 1);
  await ctx.clock.advance(1_000);
  assert.equal(ctx.tokens.length, 2, "fetched before exp");
  const queued = ctx.client.comment("sent around expiry");
  await ctx.clock.advance(30_000);
  ctx.last().serverClose(4003, "token_expired");
  const d = ctx.of("disconnected")[0];
  assert.equal(d.delayMs, 0);
  const second = ctx.client.comment("sent while reconnecting");
  await ctx.clock.advance(0);
  assert.equal(ctx.sockets.length, 2);
  assert.equal(ctx.last().url.searchParams.get("token"), ctx.tokens[1]);
  assert.equal(ctx.tokens.length, 2, "the prefetched token is used, not a third");
  ctx.last().hello();
  // Both comments are (re)sent on the new connection with their refs.
  const sent = ctx.last().frames("comment");
  assert.deepEqual(sent.map((f) => f.text), ["sent around expiry", "sent while reconnecting"]);
  for (const [i, f] of sent.entries()) {
    ctx.last().receive({ t: "comment", id: `200-${i}`, from: "u1", text: f.text, ts: 1, ref: f.ref });
  }
  assert.equal((await queued).id, "200-0");
  assert.equal((await second).id, "200-1");
});

test("a 4003 without a prefetched token fetches one", async () => {
  const ctx = setup();
  await connected(ctx);
  ctx.last().serverClose(4003);
  await ctx.clock.advance(0);
  assert.equal(ctx.tokens.length, 2);
  assert.equal(ctx.last().url.searchParams.get("token"), ctx.tokens[1]);
});

test("getToken failing backs off; TokenRefusedError stops", async () => {
  let calls = 0;
  const ctx = setup({
    getToken: async () => {
      calls++;
      if (calls < 3) throw new Error("backend down");
      throw new TokenRefusedError("not enrolled");
    },
  });
  ctx.client.connect();
  await flush();
  assert.equal(ctx.client.state, "disconnected");
  await ctx.clock.advance(60_000);
  assert.equal(calls, 3);
  assert.equal(ctx.client.state, "closed");
  assert.equal(ctx.sockets.length, 0);
  assert.ok(ctx.of("error").every((e) => e.code === "token"));
});

test("comment: echo resolves by ref; a refused one rejects; unavailable is resent with the same ref", async () => {
  const ctx = setup();
  await connected(ctx);
  const ok = ctx.client.comment("hello", { ref: "r1" });
  const limited = ctx.client.comment("again");
  const retried = ctx.client.comment("store me");
  const [f1, f2, f3] = ctx.last().frames("comment");
  assert.deepEqual(f1, { t: "comment", text: "hello", ref: "r1" });
  ctx.last().receive({ t: "comment", id: "101-0", from: "u1", text: "hello", ts: 1, ref: "r1" });
  const echoed = await ok;
  assert.equal(echoed.id, "101-0");
  assert.equal(ctx.of("comment")[0].own, true);
  ctx.last().receive({ t: "error", code: "rate_limited", message: "slow down", ref: f2.ref });
  await assert.rejects(limited, (e) => e.code === "rate_limited");
  ctx.last().receive({ t: "error", code: "unavailable", message: "redis", ref: f3.ref });
  await ctx.clock.advance(1_500);
  const resent = ctx.last().frames("comment").slice(3);
  assert.deepEqual(resent, [f3], "resent once, same ref");
  ctx.last().receive({ t: "comment", id: "102-0", from: "u1", text: "store me", ts: 1, ref: f3.ref });
  assert.equal((await retried).id, "102-0");
  assert.equal(ctx.client.pendingComments, 0);
  assert.deepEqual(ctx.of("error").map((e) => e.code), ["rate_limited", "unavailable"]);
});

test("comment: a lost connection resends with the same ref; an echo in the replay settles it", async () => {
  const ctx = setup();
  await connected(ctx);
  const p = ctx.client.comment("lost?");
  const [f] = ctx.last().frames("comment");
  ctx.last().serverClose(1006);
  await ctx.clock.advance(ctx.of("disconnected")[0].delayMs);
  ctx.last().hello({ last_id: "101-0" });
  assert.deepEqual(ctx.last().frames("comment"), [f]);
  ctx.last().receive({ t: "comment", id: "101-0", from: "u1", text: "lost?", ts: 1, ref: f.ref });
  assert.equal((await p).id, "101-0");
});

test("comment: validation, queue bound and timeout", async () => {
  const ctx = setup({ client: { maxPendingComments: 2, commentTimeoutMs: 5_000 } });
  await assert.rejects(ctx.client.comment("before connect"), (e) => e.code === "closed");
  await connected(ctx);
  await assert.rejects(ctx.client.comment("  "), (e) => e.code === "invalid");
  await assert.rejects(ctx.client.comment("x".repeat(2001)), (e) => e.code === "invalid");
  await assert.rejects(ctx.client.comment("x", { ref: "r".repeat(65) }), (e) => e.code === "invalid");
  // 2000 emoji are 2000 characters (4000 UTF-16 units): allowed.
  const long = ctx.client.comment("😀".repeat(2000));
  const other = ctx.client.comment("b");
  await assert.rejects(ctx.client.comment("c"), (e) => e.code === "queue_full");
  const timedOut = [long, other].map((p) => assert.rejects(p, (e) => e.code === "timeout"));
  await ctx.clock.advance(5_000);
  await Promise.all(timedOut);
});

test("react, dm, presence, reactions and dm events", async () => {
  const ctx = setup();
  await connected(ctx, { role: "teacher", user: "t1" });
  assert.equal(ctx.client.react("👍"), true);
  assert.equal(ctx.client.dm("u2", "see me"), true);
  assert.deepEqual(ctx.last().sent, [
    { t: "react", emoji: "👍" },
    { t: "dm", to: "u2", text: "see me" },
  ]);
  assert.throws(() => ctx.client.dm("bad id!", "x"), (e) => e.code === "invalid");
  assert.throws(() => ctx.client.react("x".repeat(17)), (e) => e.code === "invalid");
  ctx.last().receive({ t: "presence", count: 2 });
  ctx.last().receive({ t: "reactions", counts: { "👍": 3 }, ms: 250 });
  ctx.last().receive({ t: "dm", from: "t9", text: "hi", ts: 1 });
  ctx.last().receive({ t: "some_future_frame" });
  ctx.last().receive("not json");
  assert.equal(ctx.client.presence, 2);
  assert.deepEqual(ctx.of("reactions")[0].counts, { "👍": 3 });
  assert.equal(ctx.of("dm")[0].text, "hi");
  assert.deepEqual(ctx.of("error").map((e) => e.code), ["protocol"]);
  ctx.last().serverClose(1006);
  assert.equal(ctx.client.react("👍"), false, "not sent while disconnected");

  const student = setup();
  await connected(student);
  assert.throws(() => student.client.dm("u2", "x"), (e) => e.code === "forbidden");
});

test("no hello in time, or no pong after a ping: reconnect", async () => {
  const ctx = setup({ client: { helloTimeoutMs: 3_000, pingIntervalMs: 10_000, pongTimeoutMs: 2_000 } });
  ctx.client.connect();
  await flush();
  ctx.last().open();
  await ctx.clock.advance(3_000);
  assert.equal(ctx.of("disconnected")[0].reason, "hello_timeout");
  assert.equal(ctx.sockets[0].closedWith.code, 1000);
  await ctx.clock.advance(ctx.of("disconnected")[0].delayMs);
  ctx.last().hello();
  await ctx.clock.advance(10_000);
  assert.deepEqual(ctx.last().frames("ping"), [{ t: "ping" }]);
  ctx.last().receive({ t: "pong" });
  await ctx.clock.advance(2_000);
  assert.equal(ctx.of("disconnected").length, 1, "the pong kept it");
  await ctx.clock.advance(10_000);
  assert.equal(ctx.last().frames("ping").length, 2);
  await ctx.clock.advance(2_000);
  assert.equal(ctx.of("disconnected")[1].reason, "pong_timeout");
});

test("frames of an abandoned socket are ignored; close() is final and quiet", async () => {
  const ctx = setup({ client: { helloTimeoutMs: 1_000 } });
  ctx.client.connect();
  await flush();
  const old = ctx.last();
  await ctx.clock.advance(1_000);
  old.receive({ t: "comment", id: "1-0", from: "x", text: "late", ts: 1 });
  assert.equal(ctx.of("comment").length, 0);
  await ctx.clock.advance(ctx.of("disconnected")[0].delayMs);
  ctx.last().hello();
  ctx.client.close();
  assert.equal(ctx.client.state, "closed");
  assert.equal(ctx.last().closedWith.code, 1000);
  await ctx.clock.advance(600_000);
  assert.equal(ctx.sockets.length, 2);
  assert.deepEqual(ctx.of("closed").map((e) => e.reason), ["client_closed"]);
  // connect() again after close() works.
  ctx.client.connect();
  await flush();
  assert.equal(ctx.sockets.length, 3);
  assert.equal(ctx.last().url.searchParams.get("since"), "100-0");
});

test("without any WebSocket the constructor says what to do", () => {
  const saved = globalThis.WebSocket;
  try {
    delete globalThis.WebSocket;
    assert.throws(() => new LiveClassClient({ url: "ws://x/ws", getToken: () => "t" }), /WebSocket/);
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
});
