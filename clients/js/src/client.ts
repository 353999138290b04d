// The liveclass client: one WebSocket to a class, kept alive across server restarts, drains,
// token expiry and network loss, with exact resume (`since` + `epoch`) and duplicate-free
// delivery. PROTOCOL.md (crates/socket) is the contract; every close code is handled as it says.

import { Emitter } from "./emitter.js";
import {
  chars,
  CloseCode,
  compareIds,
  isMessageId,
  MAX_EMOJI_CHARS,
  MAX_REF_CHARS,
  MAX_TEXT_CHARS,
  parseServerFrame,
  PROTOCOL_VERSION,
  validUserId,
  type ClientFrame,
  type CommentFrame,
  type DmFrame,
  type ErrorFrame,
  type GapReason,
  type HelloFrame,
  type Position,
  type PresenceFrame,
  type ReactionsFrame,
} from "./protocol.js";

/** The part of the WHATWG WebSocket this client uses (browsers, Node ≥ 22, undici, `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Time, injectable so tests can drive it. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
};

export interface ClientOptions {
  /** The socket endpoint, e.g. `wss://school.example/ws`; a function is asked on every attempt. */
  url: string | (() => string | Promise<string>);
  /**
   * Returns a token from the school's backend. Called before the first connection, again
   * before the token's `exp` (so a fresh one is ready when the server closes with 4003), and
   * after repeated refused handshakes. Throw {@link TokenRefusedError} to stop for good.
   */
  getToken: () => string | Promise<string>;
  /** A WebSocket implementation; defaults to the global `WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Resume from here on the first connection (e.g. a position saved before a page reload). */
  position?: Position;
  /** Backoff: the first ceiling (ms); each failed attempt doubles it. Default 500. */
  minReconnectDelayMs?: number;
  /** Backoff: the largest ceiling (ms). Default 20,000. */
  maxReconnectDelayMs?: number;
  /** Extra wait (ms, jittered between half and all of it) after 1008 `flood` and 4001 `slow_consumer`. Default 5,000. */
  penaltyDelayMs?: number;
  /** A connection open this long (ms) resets the backoff. Default 5,000. */
  stableAfterMs?: number;
  /** Reconnect after 4002 `replaced` (another tab took the seat). Default false. */
  reconnectOnReplaced?: boolean;
  /** Fetch the next token this long (ms) before `exp`, at most half the token's life. Default 30,000. */
  tokenRefreshMarginMs?: number;
  /** Give up on a connection without `hello` after this long (ms). Default 10,000. */
  helloTimeoutMs?: number;
  /** Send `ping` after this long (ms) without a frame; 0 turns it off. Default 25,000. */
  pingIntervalMs?: number;
  /** Reconnect when nothing arrives this long (ms) after a `ping`. Default 10,000. */
  pongTimeoutMs?: number;
  /** Reject a comment not echoed within this long (ms). Default 60,000 (the server dedupes retries for 2 min). */
  commentTimeoutMs?: number;
  /** Comments waiting for their echo at once, at most. Default 100. */
  maxPendingComments?: number;
  /** Random numbers in [0, 1) for jitter; injectable for tests. */
  random?: () => number;
  clock?: Clock;
}

export type ConnectionState = "idle" | "connecting" | "connected" | "disconnected" | "closed";

export interface ConnectedEvent {
  server: string;
  class: string;
  user: string;
  role: string;
  /** False when the server could not replay what was missed (see the `gap` event). */
  recovered: boolean;
  /** True when this connection resumed from an earlier position (`since` was sent). */
  resumed: boolean;
  position: Position;
}

export interface DisconnectedEvent {
  code: number;
  reason: string;
  /** The client reconnects after `delayMs`. */
  delayMs: number;
  /** The connection had received `hello`. */
  wasConnected: boolean;
}

export interface ClosedEvent {
  code: number;
  reason: string;
}

export interface CommentEvent extends CommentFrame {
  /** Sent by this user (from this connection or another of their tabs). */
  own: boolean;
}

export interface GapEvent {
  /**
   * `unrecovered`: `hello` said `recovered:false` (nothing was replayed); `history_lost` and
   * `trimmed`: the server's `gap` frame. Either way reload the class's state; live messages
   * continue from `position`.
   */
  reason: GapReason | "unrecovered";
  position: Position;
  /** Where the client was before the hole, if it had a position. */
  previous: Position | undefined;
}

export interface ErrorEvent {
  /** A server `error` code, or `token` (getToken failed), `version`, `protocol`. */
  code: string;
  message: string;
  ref?: string;
}

export interface ClientEvents {
  state: { state: ConnectionState; previous: ConnectionState };
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  closed: ClosedEvent;
  comment: CommentEvent;
  reactions: ReactionsFrame;
  dm: DmFrame;
  presence: PresenceFrame;
  gap: GapEvent;
  error: ErrorEvent;
}

/** Thrown by `getToken` to say the user may not join (the client stops instead of retrying). */
export class TokenRefusedError extends Error {
  constructor(message = "the token was refused") {
    super(message);
    this.name = "TokenRefusedError";
  }
}

/** Why a call was refused: `invalid`, `queue_full`, `timeout`, `closed`, or a server error code. */
export class LiveClassError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = "LiveClassError";
    this.code = code;
  }
}

interface Pending {
  ref: string;
  text: string;
  resolve: (frame: CommentFrame) => void;
  reject: (error: LiveClassError) => void;
  timeout: unknown;
  retry: unknown;
  /** The socket it was last sent on. */
  sentOn: number;
}

interface Token {
  value: string;
  /** `exp` in ms, when the token has one we can read. */
  expMs: number | undefined;
  /** When to fetch the next one (ms). */
  refreshAtMs: number | undefined;
}

/** Reads `exp` from a JWT without checking it (the server checks). */
export function tokenExpiry(token: string): number | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const binary = atob(padded);
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes)) as { exp?: unknown };
    return typeof claims.exp === "number" ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The delay before reconnect attempt `attempt` (0-based): exponential backoff with full
 * jitter, `random() * min(max, min * 2^attempt)`.
 */
export function backoffDelay(
  attempt: number,
  minMs: number,
  maxMs: number,
  random: () => number,
): number {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

const OPEN = 1;

export class LiveClassClient extends Emitter<ClientEvents> {
  readonly #options: Required<
    Omit<ClientOptions, "position" | "WebSocket" | "url" | "getToken">
  >;
  readonly #url: ClientOptions["url"];
  readonly #getToken: ClientOptions["getToken"];
  readonly #WebSocket: WebSocketConstructor;
  readonly #clock: Clock;

  #state: ConnectionState = "idle";
  #position: Position | undefined;
  #presence: number | undefined;
  #hello: HelloFrame | undefined;

  #ws: WebSocketLike | undefined;
  /** Increases with every attempt; callbacks of an older attempt are ignored. */
  #attempt = 0;
  #socketToken: string | undefined;
  #helloAt: number | undefined;
  #drainAfterMs: number | undefined;
  #failures = 0;
  #refusedHandshakes = 0;
  #lastReceived = 0;

  #token: Token | undefined;
  #tokenFetch: Promise<Token> | undefined;

  #reconnectTimer: unknown;
  #helloTimer: unknown;
  #pingTimer: unknown;
  #pongTimer: unknown;
  #refreshTimer: unknown;

  #pending = new Map<string, Pending>();
  #refCounter = 0;
  readonly #refPrefix: string;
  #duplicates = 0;

  constructor(options: ClientOptions) {
    super();
    const WS =
      options.WebSocket ??
      (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new TypeError(
        "no WebSocket: pass the `WebSocket` option (Node before 22: run with --experimental-websocket, or pass the `ws` package's WebSocket)",
      );
    }
    this.#WebSocket = WS;
    this.#url = options.url;
    this.#getToken = options.getToken;
    this.#clock = options.clock ?? systemClock;
    this.#options = {
      minReconnectDelayMs: options.minReconnectDelayMs ?? 500,
      maxReconnectDelayMs: options.maxReconnectDelayMs ?? 20_000,
      penaltyDelayMs: options.penaltyDelayMs ?? 5_000,
      stableAfterMs: options.stableAfterMs ?? 5_000,
      reconnectOnReplaced: options.reconnectOnReplaced ?? false,
      tokenRefreshMarginMs: options.tokenRefreshMarginMs ?? 30_000,
      helloTimeoutMs: options.helloTimeoutMs ?? 10_000,
      pingIntervalMs: options.pingIntervalMs ?? 25_000,
      pongTimeoutMs: options.pongTimeoutMs ?? 10_000,
      commentTimeoutMs: options.commentTimeoutMs ?? 60_000,
      maxPendingComments: options.maxPendingComments ?? 100,
      random: options.random ?? Math.random,
      clock: this.#clock,
    };
    if (options.position) {
      if (!isMessageId(options.position.lastId) || !/^[A-Za-z0-9]+$/.test(options.position.epoch)) {
        throw new TypeError("position: lastId must be a message id and epoch letters and digits");
      }
      this.#position = { ...options.position };
    }
    // Not from `random` (that one is the jitter's, and tests script it).
    this.#refPrefix = Math.floor(Math.random() * 36 ** 6).toString(36);
  }

  /** `idle` (before connect), `connecting`, `connected` (after `hello`), `disconnected` (waiting to reconnect), `closed` (final). */
  get state(): ConnectionState {
    return this.#state;
  }

  /** The class position to resume from: save it to survive a page reload. */
  get position(): Position | undefined {
    return this.#position ? { ...this.#position } : undefined;
  }

  /** The last presence count (users connected to the class), once known. */
  get presence(): number | undefined {
    return this.#presence;
  }

  /** Who the server says this connection is (from the last `hello`). */
  get user(): { id: string; role: string; class: string; server: string } | undefined {
    const h = this.#hello;
    return h && { id: h.user, role: h.role, class: h.class, server: h.server };
  }

  /** Comments dropped because their id was not newer than the position. */
  get duplicatesDropped(): number {
    return this.#duplicates;
  }

  /** Comments sent and not yet echoed. */
  get pendingComments(): number {
    return this.#pending.size;
  }

  /** Opens the connection (again, after `close()`). */
  connect(): void {
    if (this.#state === "connecting" || this.#state === "connected" || this.#state === "disconnected") {
      return;
    }
    this.#failures = 0;
    this.#open();
  }

  /** Closes for good (until `connect()`); comments waiting for their echo are rejected. */
  close(): void {
    this.#finish(1000, "client_closed");
  }

  /**
   * Posts a comment. Resolves with the stored comment (its id) when the server echoes it;
   * while disconnected it waits and is sent on the next connection; it is resent with the
   * same `ref` after `unavailable` or a lost connection, and the server stores it once.
   */
  comment(text: string, options: { ref?: string } = {}): Promise<CommentFrame> {
    if (this.#state === "closed" || this.#state === "idle") {
      return Promise.reject(new LiveClassError("closed", "the client is not connected; call connect()"));
    }
    const n = chars(text);
    if (text.trim() === "" || n > MAX_TEXT_CHARS) {
      return Promise.reject(new LiveClassError("invalid", `comment text must be 1-${MAX_TEXT_CHARS} characters`));
    }
    const ref = options.ref ?? `${this.#refPrefix}-${++this.#refCounter}`;
    if (ref === "" || chars(ref) > MAX_REF_CHARS) {
      return Promise.reject(new LiveClassError("invalid", `ref must be 1-${MAX_REF_CHARS} characters`));
    }
    if (this.#pending.has(ref)) {
      return Promise.reject(new LiveClassError("invalid", `a comment with ref ${ref} is already waiting`));
    }
    if (this.#pending.size >= this.#options.maxPendingComments) {
      return Promise.reject(new LiveClassError("queue_full", "too many comments waiting for the server"));
    }
    return new Promise<CommentFrame>((resolve, reject) => {
      const entry: Pending = {
        ref,
        text,
        resolve,
        reject,
        timeout: this.#clock.setTimeout(() => {
          this.#settle(ref)?.reject(
            new LiveClassError("timeout", "the server did not confirm the comment in time"),
          );
        }, this.#options.commentTimeoutMs),
        retry: undefined,
        sentOn: 0,
      };
      this.#pending.set(ref, entry);
      if (this.#state === "connected") this.#sendPending(entry);
    });
  }

  /** Sends a reaction; false (and nothing sent) while not connected: reactions are not kept. */
  react(emoji: string): boolean {
    const n = chars(emoji);
    if (emoji.trim() === "" || n > MAX_EMOJI_CHARS) {
      throw new LiveClassError("invalid", `emoji must be 1-${MAX_EMOJI_CHARS} characters`);
    }
    return this.#send({ t: "react", emoji });
  }

  /**
   * A teacher's direct message to one user of the class (every connection of theirs); false
   * while not connected. The server answers `recipient_offline` or `forbidden` as `error` events.
   */
  dm(to: string, text: string): boolean {
    if (!validUserId(to)) throw new LiveClassError("invalid", "`to` must be a user id");
    if (text.trim() === "" || chars(text) > MAX_TEXT_CHARS) {
      throw new LiveClassError("invalid", `dm text must be 1-${MAX_TEXT_CHARS} characters`);
    }
    if (this.#hello && this.#hello.role !== "teacher") {
      throw new LiveClassError("forbidden", "only teachers may send direct messages");
    }
    return this.#send({ t: "dm", to, text });
  }

  // --- connection lifecycle ---------------------------------------------------------------

  #setState(state: ConnectionState): void {
    if (state === this.#state) return;
    const previous = this.#state;
    this.#state = state;
    this.emit("state", { state, previous });
  }

  async #open(): Promise<void> {
    const attempt = ++this.#attempt;
    this.#setState("connecting");
    this.#helloAt = undefined;
    this.#drainAfterMs = undefined;
    let token: string;
    let url: string;
    try {
      token = await this.#tokenForConnect();
      if (attempt !== this.#attempt) return;
      url = typeof this.#url === "string" ? this.#url : await this.#url();
      if (attempt !== this.#attempt) return;
    } catch (error) {
      if (attempt !== this.#attempt) return;
      const message = error instanceof Error ? error.message : String(error);
      this.emit("error", { code: "token", message: `getToken failed: ${message}` });
      if (error instanceof TokenRefusedError) {
        this.#finish(4003, "token_refused");
      } else {
        this.#scheduleReconnect(0, "token_unavailable", this.#backoff(), false);
      }
      return;
    }
    const target = new URL(url);
    target.searchParams.set("token", token);
    if (this.#position) {
      target.searchParams.set("since", this.#position.lastId);
      target.searchParams.set("epoch", this.#position.epoch);
    } else {
      target.searchParams.delete("since");
      target.searchParams.delete("epoch");
    }
    let ws: WebSocketLike;
    try {
      ws = new this.#WebSocket(target.toString());
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.emit("error", { code: "protocol", message: `cannot open a WebSocket: ${message}` });
      this.#scheduleReconnect(1006, "cannot_open", this.#backoff(), false);
      return;
    }
    this.#ws = ws;
    this.#socketToken = token;
    ws.onopen = () => {
      // `hello` is what counts as connected.
    };
    ws.onmessage = (event) => {
      if (attempt !== this.#attempt) return;
      this.#onMessage(event.data);
    };
    ws.onclose = (event) => {
      if (attempt !== this.#attempt) return;
      this.#onClose(event.code, event.reason);
    };
    ws.onerror = () => {
      // A close event should follow and carry the code; Node 20's WebSocket (undici) fires
      // only `error` when the handshake fails. Whichever comes first ends this attempt.
      this.#clock.setTimeout(() => {
        if (attempt === this.#attempt && this.#ws === ws) this.#abandon(1006, "error");
      }, 50);
    };
    this.#helloTimer = this.#clock.setTimeout(() => {
      if (attempt !== this.#attempt) return;
      this.#abandon(1006, "hello_timeout");
    }, this.#options.helloTimeoutMs);
  }

  /** Drops the current socket as if it had closed with `code` (a client-side timeout). */
  #abandon(code: number, reason: string): void {
    const ws = this.#detach();
    try {
      ws?.close(1000, reason);
    } catch {
      // already closing
    }
    this.#onClose(code, reason);
  }

  #detach(): WebSocketLike | undefined {
    const ws = this.#ws;
    this.#ws = undefined;
    if (ws) {
      ws.onopen = null;
      ws.onmessage = null;
      ws.onclose = null;
      ws.onerror = null;
    }
    for (const timer of [this.#helloTimer, this.#pingTimer, this.#pongTimer, this.#refreshTimer]) {
      if (timer !== undefined) this.#clock.clearTimeout(timer);
    }
    this.#helloTimer = this.#pingTimer = this.#pongTimer = this.#refreshTimer = undefined;
    return ws;
  }

  #onClose(code: number, reason: string): void {
    this.#detach();
    const wasConnected = this.#helloAt !== undefined;
    const now = this.#clock.now();
    if (wasConnected && now - (this.#helloAt ?? now) >= this.#options.stableAfterMs) {
      this.#failures = 0;
    }
    if (!wasConnected) {
      // A refused handshake looks like 1006 in a browser (the HTTP status is hidden). The
      // token may be the reason (expired, kicked): after two in a row, fetch a new one.
      this.#refusedHandshakes++;
      if (this.#refusedHandshakes >= 2 && this.#token?.value === this.#socketToken) {
        this.#token = undefined;
      }
    }
    switch (code) {
      case CloseCode.Replaced:
        if (!this.#options.reconnectOnReplaced) {
          this.#finish(code, reason || "replaced");
          return;
        }
        this.#scheduleReconnect(code, reason, this.#backoff(), wasConnected);
        return;
      case CloseCode.Kicked:
        this.#finish(code, reason || "kicked");
        return;
      case CloseCode.Draining:
        this.#scheduleReconnect(
          code,
          reason,
          this.#drainAfterMs ?? this.#backoff(),
          wasConnected,
        );
        return;
      case CloseCode.TokenExpired: {
        if (this.#token?.value === this.#socketToken) this.#token = undefined;
        // The first 4003 of a working connection reconnects at once with a new token; a
        // repeated one (a clock far off, a backend handing out stale tokens) backs off.
        const delay = wasConnected ? 0 : this.#backoff();
        this.#scheduleReconnect(code, reason, delay, wasConnected);
        return;
      }
      case CloseCode.Flood:
      case CloseCode.SlowConsumer: {
        const penalty = this.#options.penaltyDelayMs;
        const delay =
          Math.floor(penalty / 2 + (this.#options.random() * penalty) / 2) + this.#backoff();
        this.#scheduleReconnect(code, reason, delay, wasConnected);
        return;
      }
      default:
        // 1013 try_again_later, 1011 internal, 4000 idle, 1006 lost, 1009 and anything else:
        // reconnect with backoff (and `since`).
        this.#scheduleReconnect(code, reason, this.#backoff(), wasConnected);
    }
  }

  #backoff(): number {
    const delay = backoffDelay(
      this.#failures,
      this.#options.minReconnectDelayMs,
      this.#options.maxReconnectDelayMs,
      this.#options.random,
    );
    this.#failures++;
    return delay;
  }

  #scheduleReconnect(code: number, reason: string, delayMs: number, wasConnected: boolean): void {
    this.#setState("disconnected");
    this.emit("disconnected", { code, reason, delayMs, wasConnected });
    if (this.#state !== "disconnected") return; // a listener closed the client
    const attempt = this.#attempt;
    this.#reconnectTimer = this.#clock.setTimeout(() => {
      this.#reconnectTimer = undefined;
      if (attempt !== this.#attempt || this.#state !== "disconnected") return;
      this.#open();
    }, delayMs);
  }

  #finish(code: number, reason: string): void {
    if (this.#state === "closed") return;
    this.#attempt++;
    const ws = this.#detach();
    if (this.#reconnectTimer !== undefined) {
      this.#clock.clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = undefined;
    }
    try {
      if (ws && ws.readyState <= OPEN) ws.close(1000, reason);
    } catch {
      // closing anyway
    }
    for (const ref of [...this.#pending.keys()]) {
      this.#settle(ref)?.reject(new LiveClassError("closed", `the connection closed (${reason})`));
    }
    const wasIdle = this.#state === "idle";
    this.#setState("closed");
    if (!wasIdle) this.emit("closed", { code, reason });
  }

  // --- tokens -----------------------------------------------------------------------------

  async #tokenForConnect(): Promise<string> {
    const token = this.#token;
    if (token && (token.refreshAtMs === undefined || this.#clock.now() < token.refreshAtMs)) {
      return token.value;
    }
    // Past its refresh instant but not expired: use it if a new one cannot be had.
    try {
      return (await this.#fetchToken()).value;
    } catch (error) {
      if (token?.expMs !== undefined && this.#clock.now() < token.expMs - 1_000) return token.value;
      throw error;
    }
  }

  #fetchToken(): Promise<Token> {
    if (!this.#tokenFetch) {
      const fetch = (async () => {
        const value = await this.#getToken();
        if (typeof value !== "string" || value === "") {
          throw new TypeError("getToken must return a non-empty string");
        }
        const now = this.#clock.now();
        const expMs = tokenExpiry(value);
        const refreshAtMs =
          expMs === undefined
            ? undefined
            : expMs - Math.min(this.#options.tokenRefreshMarginMs, Math.max(0, expMs - now) / 2);
        const token: Token = { value, expMs, refreshAtMs };
        this.#token = token;
        return token;
      })();
      this.#tokenFetch = fetch;
      const clear = () => {
        if (this.#tokenFetch === fetch) this.#tokenFetch = undefined;
      };
      fetch.then(clear, clear);
    }
    return this.#tokenFetch;
  }

  /** While connected, fetch the next token before this one expires (the server closes at `exp`). */
  #scheduleRefresh(): void {
    const token = this.#token;
    if (!token || token.value !== this.#socketToken || token.refreshAtMs === undefined) return;
    const attempt = this.#attempt;
    const delay = Math.max(0, token.refreshAtMs - this.#clock.now());
    this.#refreshTimer = this.#clock.setTimeout(() => {
      this.#refreshTimer = undefined;
      if (attempt !== this.#attempt) return;
      this.#fetchToken().catch((error: unknown) => {
        const message = error instanceof Error ? error.message : String(error);
        this.emit("error", { code: "token", message: `getToken failed: ${message}` });
      });
    }, delay);
  }

  // --- frames -----------------------------------------------------------------------------

  #send(frame: ClientFrame): boolean {
    const ws = this.#ws;
    if (this.#state !== "connected" || !ws || ws.readyState !== OPEN) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  #sendPending(entry: Pending): void {
    if (entry.retry !== undefined) {
      this.#clock.clearTimeout(entry.retry);
      entry.retry = undefined;
    }
    if (this.#send({ t: "comment", text: entry.text, ref: entry.ref })) entry.sentOn = this.#attempt;
  }

  #settle(ref: string): Pending | undefined {
    const entry = this.#pending.get(ref);
    if (!entry) return undefined;
    this.#pending.delete(ref);
    this.#clock.clearTimeout(entry.timeout);
    if (entry.retry !== undefined) this.#clock.clearTimeout(entry.retry);
    return entry;
  }

  #onMessage(data: unknown): void {
    this.#lastReceived = this.#clock.now();
    const frame = parseServerFrame(data);
    if (!frame) {
      this.emit("error", { code: "protocol", message: "a frame that is not a JSON object with `t`" });
      return;
    }
    switch (frame.t) {
      case "hello":
        this.#onHello(frame);
        return;
      case "comment":
        this.#onComment(frame);
        return;
      case "reactions":
        this.emit("reactions", frame);
        return;
      case "dm":
        this.emit("dm", frame);
        return;
      case "presence":
        this.#presence = frame.count;
        this.emit("presence", frame);
        return;
      case "gap": {
        if (!isMessageId(frame.last_id)) return;
        const previous = this.#position;
        this.#position = { epoch: frame.epoch, lastId: frame.last_id };
        this.emit("gap", { reason: frame.reason, position: { ...this.#position }, previous });
        return;
      }
      case "error":
        this.#onError(frame);
        return;
      case "reconnect":
        if (typeof frame.after_ms === "number" && frame.after_ms >= 0) {
          this.#drainAfterMs = frame.after_ms;
        }
        return;
      case "pong":
        return;
      default:
        // Unknown frame types are ignored: servers may add them within a version.
        return;
    }
  }

  #onHello(hello: HelloFrame): void {
    if (this.#helloTimer !== undefined) {
      this.#clock.clearTimeout(this.#helloTimer);
      this.#helloTimer = undefined;
    }
    if (hello.v !== PROTOCOL_VERSION) {
      this.emit("error", {
        code: "version",
        message: `the server speaks protocol ${hello.v}; this client speaks ${PROTOCOL_VERSION}`,
      });
    }
    this.#hello = hello;
    this.#helloAt = this.#clock.now();
    this.#refusedHandshakes = 0;
    const previous = this.#position;
    const resumed = previous !== undefined;
    const serverPosition: Position = {
      epoch: hello.epoch,
      lastId: isMessageId(hello.last_id) ? hello.last_id : "0-0",
    };
    let recovered = hello.recovered;
    if (resumed && previous.epoch !== hello.epoch) recovered = false;
    if (!resumed || !recovered) {
      // Fresh start, or nothing was replayed: live messages follow from the class's position.
      this.#position = serverPosition;
    }
    // Otherwise every message after `since` follows (the replay advances the position).
    this.#setState("connected");
    this.emit("connected", {
      server: hello.server,
      class: hello.class,
      user: hello.user,
      role: hello.role,
      recovered,
      resumed,
      position: { ...(this.#position ?? serverPosition) },
    });
    if (resumed && !recovered) {
      this.emit("gap", { reason: "unrecovered", position: { ...serverPosition }, previous });
    }
    if (this.#state !== "connected") return; // a listener closed the client
    for (const entry of [...this.#pending.values()]) this.#sendPending(entry);
    this.#scheduleRefresh();
    this.#schedulePing();
  }

  #onComment(comment: CommentFrame): void {
    if (!isMessageId(comment.id)) return;
    if (this.#position && compareIds(comment.id, this.#position.lastId) <= 0) {
      this.#duplicates++;
      return;
    }
    if (this.#position) this.#position.lastId = comment.id;
    else this.#position = { epoch: this.#hello?.epoch ?? "", lastId: comment.id };
    const own = comment.from === this.#hello?.user;
    if (own && comment.ref !== undefined) this.#settle(comment.ref)?.resolve(comment);
    this.emit("comment", { ...comment, own });
  }

  #onError(error: ErrorFrame): void {
    const event: ErrorEvent = { code: error.code, message: error.message };
    if (error.ref !== undefined) event.ref = error.ref;
    const entry = error.ref !== undefined ? this.#pending.get(error.ref) : undefined;
    if (entry) {
      if (error.code === "unavailable") {
        // The server could not reach Redis: the comment may or may not be stored. Resend it
        // with the same ref after a jittered second (the server stores it once).
        const attempt = this.#attempt;
        entry.retry = this.#clock.setTimeout(
          () => {
            entry.retry = undefined;
            if (attempt === this.#attempt && this.#pending.get(entry.ref) === entry) {
              this.#sendPending(entry);
            }
          },
          500 + Math.floor(this.#options.random() * 1000),
        );
      } else {
        this.#settle(error.ref!)?.reject(new LiveClassError(error.code, error.message));
      }
    }
    this.emit("error", event);
  }

  #schedulePing(): void {
    const interval = this.#options.pingIntervalMs;
    if (interval <= 0) return;
    const attempt = this.#attempt;
    const tick = () => {
      this.#pingTimer = undefined;
      if (attempt !== this.#attempt || this.#state !== "connected") return;
      const idle = this.#clock.now() - this.#lastReceived;
      if (idle < interval) {
        this.#pingTimer = this.#clock.setTimeout(tick, interval - idle);
        return;
      }
      const sentAt = this.#clock.now();
      this.#send({ t: "ping" });
      this.#pongTimer = this.#clock.setTimeout(() => {
        this.#pongTimer = undefined;
        if (attempt !== this.#attempt) return;
        if (this.#lastReceived < sentAt) {
          this.#abandon(1006, "pong_timeout");
          return;
        }
        tick();
      }, this.#options.pongTimeoutMs);
    };
    this.#pingTimer = this.#clock.setTimeout(tick, interval);
  }
}
