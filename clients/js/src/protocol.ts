// The liveclass socket protocol, version 2, as the client sees it. The single definition is the
// Rust crate `liveclass-protocol` (crates/protocol); crates/socket/PROTOCOL.md documents it.
// These types follow it field for field.

/** The protocol version this client speaks (the `v` of `hello`). */
export const PROTOCOL_VERSION = 2;

export type Role = "student" | "teacher";

/** A message id: a Redis stream id `<ms>-<seq>`, increasing within a class. */
export type MessageId = string;

/** Where the client is in a class's history: resume from here with `since` + `epoch`. */
export interface Position {
  epoch: string;
  lastId: MessageId;
}

export interface HelloFrame {
  t: "hello";
  v: number;
  server: string;
  class: string;
  user: string;
  role: Role | string;
  recovered: boolean;
  epoch: string;
  last_id: MessageId;
}

export interface CommentFrame {
  t: "comment";
  id: MessageId;
  from: string;
  name?: string;
  text: string;
  ts: number;
  ref?: string;
}

export interface ReactionsFrame {
  t: "reactions";
  counts: Record<string, number>;
  ms: number;
}

export interface DmFrame {
  t: "dm";
  from: string;
  name?: string;
  text: string;
  ts: number;
}

export interface PresenceFrame {
  t: "presence";
  count: number;
}

export type GapReason = "history_lost" | "trimmed";

export interface GapFrame {
  t: "gap";
  reason: GapReason;
  epoch: string;
  last_id: MessageId;
}

/** Codes of `error` frames (PROTOCOL.md, "Error codes"). */
export type ServerErrorCode =
  | "malformed"
  | "unknown_type"
  | "invalid"
  | "forbidden"
  | "rate_limited"
  | "slow_mode"
  | "recipient_offline"
  | "unavailable"
  | "binary_unsupported";

export interface ErrorFrame {
  t: "error";
  code: ServerErrorCode | string;
  message: string;
  ref?: string;
}

export interface ReconnectFrame {
  t: "reconnect";
  after_ms: number;
}

export interface PongFrame {
  t: "pong";
}

export type ServerFrame =
  | HelloFrame
  | CommentFrame
  | ReactionsFrame
  | DmFrame
  | PresenceFrame
  | GapFrame
  | ErrorFrame
  | ReconnectFrame
  | PongFrame;

export type ClientFrame =
  | { t: "comment"; text: string; ref?: string }
  | { t: "react"; emoji: string }
  | { t: "dm"; to: string; text: string }
  | { t: "ping" };

/** Close codes of PROTOCOL.md ("Close codes"). */
export const CloseCode = {
  /** The server is shutting down; it sent `reconnect` first. */
  Draining: 1001,
  /** The client kept sending far over its rate limit. */
  Flood: 1008,
  FrameTooLarge: 1009,
  Internal: 1011,
  /** The server lost Redis while the connection was starting. */
  TryAgainLater: 1013,
  Idle: 4000,
  SlowConsumer: 4001,
  /** Another connection of the same user took the seat. */
  Replaced: 4002,
  TokenExpired: 4003,
  /** The school's backend disconnected the user. */
  Kicked: 4004,
} as const;

// Limits of client frames (crates/protocol/src/client.rs), counted in characters (code points).
export const MAX_TEXT_CHARS = 2000;
export const MAX_REF_CHARS = 64;
export const MAX_EMOJI_CHARS = 16;
export const MAX_ID_LEN = 128;

const USER_ID = /^[A-Za-z0-9_.:@-]{1,128}$/;

export function validUserId(id: string): boolean {
  return USER_ID.test(id);
}

export function chars(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

const MESSAGE_ID = /^(\d{1,20})-(\d{1,20})$/;

export function isMessageId(id: unknown): id is MessageId {
  return typeof id === "string" && MESSAGE_ID.test(id);
}

function compareDecimal(a: string, b: string): number {
  const x = a.replace(/^0+(?=\d)/, "");
  const y = b.replace(/^0+(?=\d)/, "");
  if (x.length !== y.length) return x.length < y.length ? -1 : 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * Orders two message ids exactly (no floating point: both parts are compared as decimal
 * strings). Returns a negative number, 0 or a positive number.
 */
export function compareIds(a: MessageId, b: MessageId): number {
  const ma = MESSAGE_ID.exec(a);
  const mb = MESSAGE_ID.exec(b);
  if (!ma || !mb) throw new TypeError(`not a message id: ${ma ? b : a}`);
  return compareDecimal(ma[1]!, mb[1]!) || compareDecimal(ma[2]!, mb[2]!);
}

/** Parses a server frame; `undefined` for anything that is not a JSON object with a string `t`. */
export function parseServerFrame(data: unknown): ServerFrame | undefined {
  if (typeof data !== "string") return undefined;
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const t = (value as { t?: unknown }).t;
  if (typeof t !== "string") return undefined;
  return value as ServerFrame;
}
