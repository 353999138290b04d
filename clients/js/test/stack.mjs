// The real parts for the integration tests: Debian's redis-server and the liveclass-socket
// binary, each on a free loopback port, and HS256 tokens minted with node:crypto the way a
// school's backend would.
import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

export const SECRET = randomBytes(32).toString("hex"); // 64 bytes, over the 32 the server needs

export function mintToken(claims, secret = SECRET) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = part({ iat: now, exp: now + 3600, ...claims });
  const head = part({ alg: "HS256", typ: "JWT" });
  const signature = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${signature}`;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Waits until `check()` is truthy, polling every `everyMs`, failing after `timeoutMs`. */
export async function until(what, check, { timeoutMs = 10_000, everyMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

function tcpAnswers(port, payload, expect) {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let data = "";
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.on("error", () => done(false));
    socket.on("connect", () => socket.write(payload));
    socket.on("data", (chunk) => {
      data += chunk;
      if (expect.test(data)) done(true);
    });
  });
}

async function httpStatus(port, pathname) {
  try {
    const response = await fetch(`http://127.0.0.1:${port}${pathname}`, { signal: AbortSignal.timeout(1_000) });
    await response.arrayBuffer();
    return response.status;
  } catch {
    return 0;
  }
}

class Child {
  constructor(name, command, args, dir) {
    this.name = name;
    this.log = path.join(dir, `${name}.log`);
    const fd = openSync(this.log, "a");
    this.process = spawn(command, args, { stdio: ["ignore", fd, fd] });
    this.exited = new Promise((resolve) => this.process.on("exit", (code, signal) => resolve({ code, signal })));
  }

  kill(signal = "SIGKILL") {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill(signal);
    return this.exited;
  }

  tail() {
    try {
      return readFileSync(this.log, "utf8").split("\n").slice(-30).join("\n");
    } catch {
      return "";
    }
  }
}

export class Stack {
  constructor() {
    this.dir = mkdtempSync(path.join(tmpdir(), "liveclass-js-"));
    this.children = [];
    this.secretFile = path.join(this.dir, "secret");
    writeFileSync(this.secretFile, SECRET);
  }

  async redis() {
    const port = await freePort();
    const child = new Child("redis", "redis-server", [
      "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
      "--maxmemory-policy", "noeviction", "--dir", this.dir,
    ], this.dir);
    this.children.push(child);
    await until("redis-server to answer PING", () => tcpAnswers(port, "PING\r\n", /\+PONG/));
    this.redisUrl = `redis://127.0.0.1:${port}`;
    return this.redisUrl;
  }

  /** Starts a socket server (again on `port`, to play a restarted pod); waits for /readyz. */
  async socket(podId, { port, args = [] } = {}) {
    const binary = process.env.LIVECLASS_SOCKET_BIN;
    if (!binary) throw new Error("LIVECLASS_SOCKET_BIN is not set (run through `npm test`)");
    const listen = port ?? (await freePort());
    const admin = await freePort();
    const child = new Child(`socket-${podId}-${listen}`, binary, [
      "--listen", `127.0.0.1:${listen}`, "--admin-listen", `127.0.0.1:${admin}`,
      "--redis-url", this.redisUrl, "--pod-id", podId, "--token-secret-file", this.secretFile,
      ...args,
    ], this.dir);
    this.children.push(child);
    try {
      await until(`socket server ${podId} to be ready`, async () => {
        if (child.process.exitCode !== null) throw new Error(`exited: ${child.tail()}`);
        return (await httpStatus(listen, "/readyz")) === 200;
      }, { timeoutMs: 15_000 });
    } catch (error) {
      await child.kill();
      throw error;
    }
    return { child, port: listen, url: `ws://127.0.0.1:${listen}/ws`, podId };
  }

  async stop() {
    await Promise.all(this.children.map((child) => child.kill()));
  }
}

/** A WebSocket that records what it receives and when, to check timing against frames. */
export function tappedWebSocket(log) {
  const Base = globalThis.WebSocket;
  return class Tapped extends Base {
    constructor(url) {
      super(url);
      log.push({ at: Date.now(), opened: url });
      this.addEventListener("message", (event) => {
        log.push({ at: Date.now(), frame: JSON.parse(event.data) });
      });
    }
  };
}
