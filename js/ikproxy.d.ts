// Type declarations for ikproxy.js, the browser module of ikproxy (wire protocol 1).
//
// In a bundled app, install the npm package `ikproxy` and `import { run } from "ikproxy"`.
// A page that imports the copy its server serves (`import ... from "/api/ikproxy.js"`)
// maps that URL to this file in its tsconfig.json (no `declare module` needed):
//   "compilerOptions": { "paths": { "/api/ikproxy.js": ["./node_modules/ikproxy/ikproxy.d.ts"] } }

export declare const PROTOCOL_VERSION: 1;
export declare const DEFAULT_MAX_LINE_BYTES: number;
export declare const DEFAULT_MAX_EVENT_BYTES: number;

/** The wire error codes (docs/protocol.md); more may appear in later versions. */
export type ErrorCode =
  | "invalid_parameter"
  | "invalid_input"
  | "bad_request"
  | "unauthenticated"
  | "forbidden"
  | "not_found"
  | "method_not_allowed"
  | "payload_too_large"
  | "unsupported_media_type"
  | "rate_limited"
  | "too_many_runs"
  | "resume_expired"
  | "store_unavailable"
  | "internal"
  | "upstream_failed"
  | "workflow_failed"
  | "unauthorized"
  | "timeout"
  | "run_lost"
  | "invalid_stream"
  | "incomplete_stream"
  | "network_error"
  | "http_error"
  | (string & {});

/** Run states; upstreams may report others. */
export type State = "BLOCKING" | "SENDING" | "PENDING" | "STARTED" | "SUCCESS" | "FAILURE" | (string & {});

/** Remaining time in milliseconds, `[lower, upper]`; either bound may be unknown. */
export type Eta = [lower: number | null, upper: number | null];

export type StreamFormat = "sse" | "ndjson";

/** Base class of every error ikproxy.js throws. */
export declare class IkproxyError extends Error {
  constructor(message?: string, options?: { cause?: unknown });
  code: ErrorCode;
}

/** A refused request (`status` set) or a stream that ended with an `error` event. */
export declare class StreamError extends IkproxyError {
  constructor(
    code: ErrorCode,
    message: string,
    requestId?: string | null,
    options?: { status?: number | null; retryAfter?: number | null; cause?: unknown },
  );
  readonly name: "StreamError";
  code: ErrorCode;
  /** The request id to quote when reporting the error (the detail is in the server log). */
  requestId: string | null;
  /** The HTTP status when the request was refused before any stream (null for an `error` event). */
  status: number | null;
  /** The seconds the server asked to wait before retrying (its `Retry-After` header), or null. */
  retryAfter: number | null;
}

/** A stream that ended or was cut without a terminal `result` or `error` event. */
export declare class IncompleteStream extends IkproxyError {
  constructor(message?: string, options?: { cause?: unknown });
  readonly name: "IncompleteStream";
  code: "incomplete_stream";
}

/** The wire form of an output by reference. */
export interface RefJSON {
  url: string;
  kind: string;
  content_type: string;
  size: number | null;
}

/**
 * An output the proxy serves by reference (a video, a large image, a stored file).
 * `url` is absolute once the stream is read (resolved against the run's URL).
 */
export declare class RefOutput {
  constructor(data: Partial<RefJSON> & { url: string });
  readonly kind: "ref";
  url: string;
  /** What it stands for: "image", "storage_object" or "file". */
  readonly of: string;
  /** Its media type, e.g. "video/mp4". */
  readonly contentType: string;
  readonly size: number | null;
  resolve(base: string | URL): this;
  /** GET it (`init` as for `fetch`, e.g. a `Range` header); rejects with a StreamError on an error status. */
  fetch(init?: RequestInit): Promise<Response>;
  fetchBlob(): Promise<Blob>;
  fetchBytes(): Promise<Uint8Array>;
  toJSON(): { ref: RefJSON };
}

/**
 * An encoded image output: base64 on the wire, or served by reference when large
 * (`byReference`). `url` works as `<img src>` either way.
 */
export declare class ImageOutput {
  constructor(base64: string | null, ref?: RefOutput | null);
  readonly kind: "image";
  /** The base64 text as it came on the wire; null when by reference. */
  readonly base64: string | null;
  readonly ref: RefOutput | null;
  readonly byReference: boolean;
  /** The encoded file bytes (decoded once); a TypeError when by reference (use `fetchBytes()`). */
  readonly bytes: Uint8Array;
  /** "PNG", "JPEG", "GIF", "BMP", "TIFF", "ICO", "WEBP", "AVIF", or null. */
  readonly format: string | null;
  /** Sniffed from the bytes; "application/octet-stream" if unknown. */
  readonly mimeType: string;
  /** For `<img src>`: the reference's URL, or the data URL. */
  readonly url: string;
  /**
   * A `data:image/...;base64,...` URL (a TypeError for an unknown format); for an image
   * by reference, its URL (use `toDataUrl()` for a real data URL).
   */
  readonly dataUrl: string;
  /** A `data:` URL, downloading the image first when it is by reference. */
  toDataUrl(): Promise<string>;
  /** Inline images only (a TypeError when by reference: use `fetchBlob()`). */
  toBlob(): Blob;
  fetchBlob(): Promise<Blob>;
  fetchBytes(): Promise<Uint8Array>;
  /** A `blob:` URL (revoke it with `URL.revokeObjectURL`); by reference, its own URL. */
  objectUrl(): string;
  toJSON(): { image: string } | { ref: RefJSON };
}

/** A file held in SCALE storage. */
export declare class StorageObjectOutput {
  constructor(data: Record<string, unknown>);
  readonly kind: "storage_object";
  readonly data: Record<string, unknown>;
  readonly url: string | null;
  readonly dataType: string | null;
  toJSON(): { storage_object: Record<string, unknown> };
}

/** Any other output: its kind (e.g. "object_detection") and JSON data. */
export declare class TaskOutput<T = unknown> {
  constructor(kind: string, data: T);
  readonly kind: string;
  readonly data: T;
  toJSON(): Record<string, T>;
}

export type Output = ImageOutput | RefOutput | StorageObjectOutput | TaskOutput;

export declare function outputFromJSON(obj: unknown): Output;
export declare function sniffImage(head: Uint8Array): { format: string; mimeType: string } | null;

/** The outputs of a finished run. */
export declare class Results implements Iterable<Output> {
  constructor(outputs?: Iterable<Output>, uuid?: string | null);
  readonly outputs: readonly Output[];
  readonly uuid: string | null;
  readonly length: number;
  /** Output `index` (default 0); a RangeError if there is none. */
  getOutput(index?: number): Output;
  /** Output `index`, checked to be an instance of `expect` (a TypeError otherwise). */
  getOutput<T extends Output>(index: number, expect: abstract new (...args: any[]) => T): T;
  getOutputs(): Output[];
  /** The first image output, or null. */
  firstImage(): ImageOutput | null;
  /** Resolve the URLs of the outputs by reference against `base` (done by `run()` and the stream consumers). */
  resolveUrls(base: string | URL): this;
  [Symbol.iterator](): Iterator<Output>;
  toJSON(): { uuid: string | null; outputs: Record<string, unknown>[] };
  static fromJSON(obj: unknown): Results;
}

export interface ProgressInit {
  state: State;
  eta?: Eta;
  runId?: string | null;
  uuid?: string | null;
  name?: string | null;
  fraction?: number | null;
  results?: Results | null;
}

/** One state report of a run; the final one carries `results`. */
export declare class Progress {
  constructor(init: ProgressInit);
  readonly state: State;
  readonly eta: Eta;
  /** ikproxy's id of the run. */
  readonly runId: string | null;
  /** The deployment's own id of the run, once known. */
  readonly uuid: string | null;
  /** The task's name. */
  readonly name: string | null;
  /** 0 to 1 when the deployment knows it, else null. */
  readonly fraction: number | null;
  readonly results: Results | null;
  /** True on the final progress, the one that carries the results. */
  readonly done: boolean;
  toJSON(): Record<string, unknown>;
  static fromJSON(obj: unknown): Progress;
}

/** Called with each progress (and the final result); may return a promise, which is awaited. */
export type OnProgress = (progress: Progress) => void | Promise<void>;

/** Chunks a consumer accepts besides a ReadableStream. */
export type Chunk = Uint8Array | ArrayBuffer | ArrayBufferView | string;

export interface ServerSentEvent {
  type: string;
  data: string;
  id: string;
}

/** Incremental WHATWG Server-Sent Events parser (text in, events out). */
export declare class SSEDecoder {
  constructor(options?: { maxEventLength?: number });
  readonly maxEventLength: number;
  lastEventId: string;
  retry: number | null;
  feed(text: string): ServerSentEvent[];
  close(): ServerSentEvent[];
}

/** Incremental NDJSON decoder (bytes in, parsed values out). */
export declare class NDJSONDecoder {
  constructor(options?: { maxLineBytes?: number });
  feed(chunk: Uint8Array): unknown[];
  close(): unknown[];
}

/** Consume wire bytes (SSE, or NDJSON when the first byte is `{`) into `Results`. */
export declare function processReadableStream(
  stream: ReadableStream<Uint8Array> | AsyncIterable<Chunk> | Iterable<Chunk>,
  onProgress?: OnProgress | null,
  options?: { format?: StreamFormat | null },
): Promise<Results>;

/** Consume an NDJSON stream: bytes, a string, or an (async) iterable of wire objects or chunks. */
export declare function processJsonStream(
  source:
    | ReadableStream<Uint8Array>
    | string
    | Uint8Array
    | ArrayBuffer
    | AsyncIterable<Record<string, unknown> | Chunk>
    | Iterable<Record<string, unknown> | Chunk>,
  onProgress?: OnProgress | null,
): Promise<Results>;

/** Consume a fetch `Response` from an ikproxy endpoint; an HTTP error status rejects with `StreamError`. */
export declare function processStreamingResponse(
  response: Response,
  onProgress?: OnProgress | null,
): Promise<Results>;

/** A parameter value: text, a number, a boolean, or a file to upload. */
export type ParamValue = string | number | boolean | Blob | null | undefined;

export interface RunOptions {
  onProgress?: OnProgress | null;
  /** Aborting it rejects with an `AbortError` and closes the run on the server. */
  signal?: AbortSignal;
  format?: StreamFormat | null;
  /** An image to send: a File or Blob (multipart POST) or a data URL (JSON POST), or a list. */
  image?: Blob | string | Array<Blob | string> | null;
  /** Extra request headers, such as `Authorization`. */
  headers?: Record<string, string>;
  /**
   * How many times a stream cut by a lost connection is resumed from its last
   * event id, when the server keeps runs resumable (default 3; 0 never resumes).
   */
  resume?: number;
  /**
   * The longest `Retry-After`, in seconds, that `run()` waits out when a resume is
   * refused with 429 or 503 (default 30); a longer one rejects with the `StreamError`
   * at once. Aborting `signal` ends the wait.
   */
  maxRetryAfter?: number;
  /** The fetch function to use (default: the global one). */
  fetch?: typeof fetch;
}

/** Run a job through an ikproxy endpoint (GET, or POST with an image) and resolve to its results. */
export declare function run(
  url: string | URL,
  params?: Record<string, ParamValue>,
  options?: RunOptions,
): Promise<Results>;

/** A smooth, never-backwards fraction for a progress bar, driven by progress events and their ETA. */
export declare class ProgressEstimate {
  constructor(options?: { cap?: number; now?: () => number });
  readonly cap: number;
  readonly done: boolean;
  update(progress: Progress, now?: number): void;
  fractionAt(now?: number): number;
  remainingAt(now?: number): number | null;
}

/** "less than a second", "4 s", "1 min 5 s"; "" for null. */
export declare function formatDuration(ms: number | null | undefined): string;
