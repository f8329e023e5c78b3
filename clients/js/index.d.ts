// Types of duplex-client.js (hand-written: the module itself needs no build step).

/** The subprotocol of the JSON chat protocol: "duplex.v1". */
export const PROTOCOL: "duplex.v1";

export interface Backoff {
  /** First retry's cap, in ms (default 500). */
  initial: number;
  /** Largest delay, in ms (default 10000). */
  max: number;
  /** Growth per failed attempt (default 2). */
  factor: number;
  /** 1: full jitter, uniform in [0, cap] (default); 0: no jitter, the cap itself. */
  jitter: number;
}

export const DEFAULT_BACKOFF: Readonly<Backoff>;

/** The delay before reconnect attempt `attempt` (0-based), in ms. Pure; `random` in [0, 1). */
export function backoffDelay(attempt: number, backoff?: Partial<Backoff>, random?: () => number): number;

/** The default policy: whether a close with this code reconnects (see duplex-client.js). */
export function shouldReconnect(code: number): boolean;

/** UTF-8 length of `text` in bytes. */
export function utf8Length(text: string): number;

/** Whether a signed token's `rooms` patterns (`name`, `prefix.*`; null: all) allow `room`. */
export function roomAllowed(patterns: string[] | null, room: string): boolean;

/** A hub frame as an object with a string `type`, or null. */
export function parseFrame(data: unknown): ({ type: string } & Record<string, unknown>) | null;

/** The client's pacing of its frames (like the hub's rate limit). Times in ms. */
export class TokenBucket {
  constructor(rate: number, capacity: number, now: number);
  take(now: number): boolean;
  wait(now: number): number;
}

export type ErrorCode =
  // the client's own
  | "too_large"
  | "queue_full"
  | "bad_room"
  | "not_joined"
  | "left"
  | "closed"
  | "transport"
  | "protocol"
  // the hub's
  | "bad_request"
  | "bad_name"
  | "too_many_rooms"
  | "storage"
  | "unavailable"
  | "busy"
  | "identity"
  | "forbidden_room"
  | "read_only"
  | (string & {});

export class DuplexError extends Error {
  name: "DuplexError";
  code: ErrorCode;
  /** The room of the request, when known. */
  room?: string;
  /** Which request the hub refused, when known. */
  request?: "join" | "send";
  /** For a refused send: its text. */
  text?: string;
  /** For `too_large`: the encoded size and the limit, in bytes. */
  size?: number;
  limit?: number;
  /** For `closed` after the hub closed the connection: the close code. */
  closeCode?: number;
}

export interface DuplexClientOptions {
  /** Sent as `?token=`: a shared token or a JWT; a function is asked before every attempt. */
  token?: string | (() => string | Promise<string>);
  /** The name to join under (a signed token's name takes its place). */
  name?: string;
  /** The WebSocket constructor (default: globalThis.WebSocket; in Node < 22, the `ws` package). */
  WebSocket?: unknown;
  backoff?: Partial<Backoff>;
  /** Messages that may wait to be written (offline, or paced); more are refused (default 100). */
  maxQueue?: number;
  /** Largest frame, in bytes, as the hub's --max-message-size (default 65536). */
  maxMessageSize?: number;
  /** Frames per second written at most, as the hub's --rate-limit (default 20; 0: unpaced). */
  rateLimit?: number;
  /** How long an attempt may take to open, in ms (default 10000). */
  connectTimeout?: number;
  /** Overrides the close-code policy (default: shouldReconnect). */
  shouldReconnect?: (code: number, reason: string) => boolean;
}

export interface ChatMessage {
  room: string;
  seq: number;
  from: string;
  /** Milliseconds since the Unix epoch, as the hub received it. */
  time: number;
  text: string;
  /** Whether it acknowledges one of this client's send() calls. */
  mine: boolean;
}

export interface HistoryEvent {
  room: string;
  epoch: string | null;
  gap: boolean;
  firstSeq?: number;
  /** The replayed messages not seen before, oldest first. */
  messages: ChatMessage[];
}

export interface GapEvent {
  room: string;
  /** The oldest message the hub still holds (the replay starts there). */
  firstSeq: number;
  epoch: string | null;
}

export interface PresenceEvent {
  room: string;
  event: "joined" | "left";
  name: string;
  count: number;
  /** Everyone in the room now, as the client keeps the list. */
  members: string[];
  /** This client's own join (it carries the whole list). */
  self: boolean;
}

export interface Identity {
  sub: string;
  name: string;
  rooms: string[] | null;
  publish: boolean;
}

export interface RoomInfo {
  name: string;
  members: number;
  last_seq: number;
}

export interface JoinResult {
  room: string;
  members: string[];
  lastSeq: number;
  epoch: string | null;
}

export type State = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface StateEvent {
  state: State;
  /** With `reconnecting`: the attempt about to be made (1-based) and its delay in ms. */
  attempt?: number;
  delay?: number;
}

export interface CloseEvent {
  code: number;
  reason: string;
  wasClean: boolean;
  /** Whether the client reconnects by itself (after `delay` ms). */
  reconnect: boolean;
  delay?: number;
}

export interface Events {
  message: ChatMessage;
  history: HistoryEvent;
  gap: GapEvent;
  presence: PresenceEvent;
  joined: JoinResult;
  identity: Identity;
  rooms: { rooms: RoomInfo[] };
  error: DuplexError;
  state: StateEvent;
  close: CloseEvent;
}

export class DuplexClient {
  constructor(url: string | URL, options?: DuplexClientOptions);
  readonly state: State;
  readonly identity: Identity | null;
  readonly name: string | null;
  /** Messages accepted by send() and not yet written. */
  readonly queued: number;
  on<K extends keyof Events>(type: K, listener: (event: Events[K]) => void): () => void;
  off<K extends keyof Events>(type: K, listener: (event: Events[K]) => void): void;
  connect(): void;
  close(code?: number, reason?: string): void;
  join(room: string, position?: { since?: number; epoch?: string }): Promise<JoinResult>;
  leave(room: string): void;
  /** Resolves with the message's seq once the hub hands it back. */
  send(room: string, text: string): Promise<number>;
  rooms(): Promise<RoomInfo[]>;
  setName(name: string): void;
  joined(): Array<{ room: string; lastSeq: number; epoch: string | null; ready: boolean; members: string[] }>;
}
