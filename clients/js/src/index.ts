export {
  LiveClassClient,
  LiveClassError,
  TokenRefusedError,
  backoffDelay,
  tokenExpiry,
  type ClientEvents,
  type ClientOptions,
  type Clock,
  type ClosedEvent,
  type CommentEvent,
  type ConnectedEvent,
  type ConnectionState,
  type DisconnectedEvent,
  type ErrorEvent,
  type GapEvent,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./client.js";
export { Emitter, type Listener } from "./emitter.js";
export * from "./protocol.js";
