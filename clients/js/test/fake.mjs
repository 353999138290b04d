// A fake clock and a fake WebSocket, so the client's timing and close-code logic is tested
// exactly, without a network or real time.

export class FakeClock {
  t = 1_764_300_000_000;
  #timers = new Map();
  #next = 1;

  now() {
    return this.t;
  }

  setTimeout(fn, ms) {
    const id = this.#next++;
    this.#timers.set(id, { at: this.t + Math.max(0, ms), fn, id });
    return id;
  }

  clearTimeout(id) {
    this.#timers.delete(id);
  }

  /** Pending timers' delays from now, soonest first. */
  pending() {
    return [...this.#timers.values()].map((x) => x.at - this.t).sort((a, b) => a - b);
  }

  /** Moves time forward by `ms`, firing timers in order (and letting promises settle). */
  async advance(ms) {
    const end = this.t + ms;
    for (let guard = 0; guard < 10_000; guard++) {
      await flush();
      const due = [...this.#timers.values()]
        .filter((x) => x.at <= end)
        .sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.#timers.delete(due.id);
      this.t = due.at;
      due.fn();
    }
    this.t = end;
    await flush();
  }
}

/** Lets pending promise callbacks (the client's async token fetch) run. */
export async function flush() {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

export function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    readyState = 0;
    onopen = null;
    onmessage = null;
    onclose = null;
    onerror = null;
    sent = [];
    closedWith = undefined;

    constructor(url) {
      this.url = new URL(url);
      sockets.push(this);
    }

    send(data) {
      if (this.readyState !== 1) throw new Error("not open");
      this.sent.push(JSON.parse(data));
    }

    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }

    // --- the server's side ---
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    receive(frame) {
      this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
    }

    hello(fields = {}) {
      if (this.readyState === 0) this.open();
      this.receive({
        t: "hello",
        v: 2,
        server: "s1",
        class: "school/c",
        user: "u1",
        role: "student",
        recovered: true,
        epoch: "E1",
        last_id: "100-0",
        ...fields,
      });
    }

    /** A failed handshake as Node 20's undici reports it: `error`, and no `close` ever. */
    failWithoutClose() {
      this.onerror?.({ type: "error" });
    }

    serverClose(code, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }

    frames(t) {
      return this.sent.filter((f) => f.t === t);
    }
  }
  return { FakeWebSocket, sockets };
}

/** An unsigned JWT-shaped token with these claims (the client only reads `exp`). */
export function fakeToken(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.sig`;
}
