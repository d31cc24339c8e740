// ikproxy.js: read an ikproxy stream (wire protocol 1) in the browser.
//
// A zero-dependency ES module, served by every ikproxy app at `<mount>/ikproxy.js`
// (its TypeScript declarations at `<mount>/ikproxy.d.ts`). It is the twin of the
// Python module `ikproxy.browser`: same functions, same callbacks, same errors.
//
//   import { run } from "/api/ikproxy.js";
//   const results = await run("/api/run", { prompt: "a cat" }, {
//     onProgress: (p) => console.log(p.state, p.fraction, p.eta),
//   });
//   img.src = results.getOutput(0).dataUrl;
//
// Each `progress` event (and the final `result`) is passed to `onProgress`; an
// `error` event rejects with `StreamError`; a stream that ends without a terminal
// event rejects with `IncompleteStream`. The wire protocol is in docs/protocol.md.

export const PROTOCOL_VERSION = 1;

/** The default limit on one NDJSON line (bounded memory), as in Python. */
export const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;

const SSE_MEDIA_TYPE = "text/event-stream";
const NDJSON_MEDIA_TYPE = "application/x-ndjson";

// -- errors ---------------------------------------------------------------------

/** Base class of every error this module throws; `code` is a short wire error code. */
export class IkproxyError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = "IkproxyError";
    this.code = "internal";
  }
}

/**
 * A refused request (HTTP error status, `status` set) or a stream that ended with
 * an `error` event: its `code`, safe `message`, `requestId`, and for a refusal its
 * `status` and `retryAfter`.
 */
export class StreamError extends IkproxyError {
  constructor(code, message, requestId = null, { status = null, retryAfter = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "StreamError";
    this.code = code;
    this.requestId = requestId;
    /** The HTTP status when the error came as a response before any stream. */
    this.status = status;
    /** The seconds the server asked to wait before retrying (`Retry-After`), or null. */
    this.retryAfter = retryAfter;
  }

  toString() {
    return `${this.name}: ${this.code}: ${this.message}` + (this.requestId ? ` (request ${this.requestId})` : "");
  }
}

/** A stream that ended (or was cut) without a terminal `result` or `error` event. */
export class IncompleteStream extends IkproxyError {
  constructor(message = "the stream ended without a result or error event", options) {
    super(message, options);
    this.name = "IncompleteStream";
    this.code = "incomplete_stream";
  }
}

function malformed(reason) {
  return new StreamError("invalid_stream", `malformed stream: ${reason}`);
}

// -- outputs --------------------------------------------------------------------

// Magic numbers of the image formats a browser can show, checked in order
// (the same table as ikproxy/io.py).
const SIGNATURES = [
  [[0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "PNG", "image/png"],
  [[0xff, 0xd8, 0xff], "JPEG", "image/jpeg"],
  [[0x47, 0x49, 0x46, 0x38, 0x37, 0x61], "GIF", "image/gif"],
  [[0x47, 0x49, 0x46, 0x38, 0x39, 0x61], "GIF", "image/gif"],
  [[0x42, 0x4d], "BMP", "image/bmp"],
  [[0x49, 0x49, 0x2a, 0x00], "TIFF", "image/tiff"],
  [[0x4d, 0x4d, 0x00, 0x2a], "TIFF", "image/tiff"],
  [[0x00, 0x00, 0x01, 0x00], "ICO", "image/x-icon"],
];

function startsWith(head, magic, offset = 0) {
  if (head.length < offset + magic.length) return false;
  return magic.every((byte, i) => head[offset + i] === byte);
}

const ascii = (text) => Array.from(text, (c) => c.charCodeAt(0));

/**
 * The image format and MIME type read from an image's first bytes, or null.
 * @param {Uint8Array} head
 */
export function sniffImage(head) {
  for (const [magic, format, mimeType] of SIGNATURES) {
    if (startsWith(head, magic)) return { format, mimeType };
  }
  if (startsWith(head, ascii("RIFF")) && startsWith(head, ascii("WEBP"), 8)) {
    return { format: "WEBP", mimeType: "image/webp" };
  }
  if (startsWith(head, ascii("ftyp"), 4) && (startsWith(head, ascii("avif"), 8) || startsWith(head, ascii("avis"), 8))) {
    return { format: "AVIF", mimeType: "image/avif" };
  }
  return null;
}

function base64ToBytes(text) {
  let binary;
  try {
    binary = atob(text);
  } catch {
    throw new TypeError("image output is not valid base64");
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function typeName(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * An output the proxy serves by reference (a video, a large image, a stored file):
 * `{"ref": {"url", "kind", "content_type", "size"}}` on the wire. `url` is resolved
 * against the run request's URL once the stream is read, so it works as `<video src>`
 * or `<a href>` as is; the bytes are downloaded only when asked for.
 */
export class RefOutput {
  constructor(data) {
    if (!isPlainObject(data) || typeof data.url !== "string") {
      throw new TypeError("a ref output must be a JSON object with a string 'url'");
    }
    this.kind = "ref";
    /** The URL of the output (relative on the wire, absolute once resolved). */
    this.url = data.url;
    /** The kind of output it stands for: "image", "storage_object" or "file". */
    this.of = typeof data.kind === "string" ? data.kind : "file";
    /** Its media type, e.g. "video/mp4". */
    this.contentType = typeof data.content_type === "string" ? data.content_type : "application/octet-stream";
    /** Its size in bytes, or null. */
    this.size = Number.isInteger(data.size) ? data.size : null;
  }

  /** Resolve `url` against `base` (the URL of the run request). */
  resolve(base) {
    this.url = new URL(this.url, base).href;
    return this;
  }

  /** GET the output (`init` as for `fetch`, e.g. a `Range` header); rejects on an error status. */
  async fetch(init = {}) {
    const response = await globalThis.fetch(this.url, init);
    if (!response.ok) throw await httpError(response);
    return response;
  }

  /** The output as a `Blob` (downloaded). */
  async fetchBlob() {
    const blob = await (await this.fetch()).blob();
    return blob.type ? blob : new Blob([blob], { type: this.contentType });
  }

  /** The output's bytes (downloaded). */
  async fetchBytes() {
    return new Uint8Array(await (await this.fetch()).arrayBuffer());
  }

  toJSON() {
    return { ref: { url: this.url, kind: this.of, content_type: this.contentType, size: this.size } };
  }
}

function blobToDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

/**
 * An encoded image output (PNG, JPEG, ...): carried as base64 on the wire, or, when
 * large, served by reference (`byReference`, its `ref` a `RefOutput`). `url` works as
 * `<img src>` either way; the sync byte views (`bytes`, `toBlob()`) need an inline
 * image, their async twins (`fetchBytes()`, `fetchBlob()`, `toDataUrl()`) work for both.
 */
export class ImageOutput {
  constructor(base64, ref = null) {
    if (ref === null && typeof base64 !== "string") {
      throw new TypeError(`image output must be a base64 string, not ${typeName(base64)}`);
    }
    this.kind = "image";
    /** The image file as base64 text, as it came on the wire (null when by reference). */
    this.base64 = ref === null ? base64 : null;
    /** The reference, when the image is served by the proxy instead of inlined. */
    this.ref = ref;
    this._bytes = null;
    this._sniffed = undefined;
  }

  /** True when the image is served by reference (download it with `fetchBytes()`). */
  get byReference() {
    return this.ref !== null;
  }

  _inline(what) {
    if (this.ref !== null) {
      throw new TypeError(`this image is served by reference: use ${what} (async) or its url`);
    }
  }

  /** The encoded image file bytes (decoded once, on first use); inline images only. */
  get bytes() {
    this._inline("fetchBytes()");
    if (this._bytes === null) this._bytes = base64ToBytes(this.base64);
    return this._bytes;
  }

  _sniff() {
    if (this._sniffed === undefined) {
      if (this.ref !== null) {
        // The proxy sniffed it from the bytes: image/png gives "PNG", and so on.
        const mimeType = this.ref.contentType;
        this._sniffed = mimeType.startsWith("image/") ? { format: mimeType.slice(6).toUpperCase(), mimeType } : null;
        return this._sniffed;
      }
      let head;
      try {
        head = this._bytes ?? base64ToBytes(this.base64.slice(0, 24));
      } catch {
        head = new Uint8Array(0);
      }
      this._sniffed = sniffImage(head);
    }
    return this._sniffed;
  }

  /** The image format sniffed from its bytes ("PNG", "JPEG", ...), or null. */
  get format() {
    return this._sniff()?.format ?? null;
  }

  /** The MIME type sniffed from its bytes; "application/octet-stream" if unknown. */
  get mimeType() {
    return this._sniff()?.mimeType ?? "application/octet-stream";
  }

  /** A URL for `<img src>`: the reference's URL, or the inline image's data URL. */
  get url() {
    return this.ref !== null ? this.ref.url : this.dataUrl;
  }

  /**
   * A `data:image/...;base64,...` URL, ready for `<img src>`. For an image served by
   * reference, its URL (equally ready for `<img src>`); `await toDataUrl()` gives a data URL.
   */
  get dataUrl() {
    if (this.ref !== null) return this.ref.url;
    const sniffed = this._sniff();
    if (sniffed === null) throw new TypeError("image output is not in a format a browser can show");
    return `data:${sniffed.mimeType};base64,${this.base64}`;
  }

  /** A `data:` URL of the image, downloading it first when it is served by reference. */
  async toDataUrl() {
    if (this.ref === null) return this.dataUrl;
    return blobToDataUrl(await this.fetchBlob());
  }

  /** The image as a `Blob` of its sniffed MIME type; inline images only (else `fetchBlob()`). */
  toBlob() {
    this._inline("fetchBlob()");
    return new Blob([this.bytes], { type: this.mimeType });
  }

  /** The image as a `Blob`, downloaded when it is served by reference. */
  async fetchBlob() {
    return this.ref === null ? this.toBlob() : this.ref.fetchBlob();
  }

  /** The image's bytes, downloaded when it is served by reference. */
  async fetchBytes() {
    return this.ref === null ? this.bytes : this.ref.fetchBytes();
  }

  /**
   * A URL for the image that is lighter than a data URL: a `blob:` URL (revoke it with
   * `URL.revokeObjectURL`), or, for an image served by reference, its own URL.
   */
  objectUrl() {
    if (this.ref !== null) return this.ref.url;
    return URL.createObjectURL(this.toBlob());
  }

  toJSON() {
    return this.ref !== null ? this.ref.toJSON() : { image: this.base64 };
  }
}

/** A file held in SCALE storage: `{"storage_object": {"url": ..., "data_type": ...}}`. */
export class StorageObjectOutput {
  constructor(data) {
    if (!isPlainObject(data)) {
      throw new TypeError(`storage_object must be a JSON object, not ${typeName(data)}`);
    }
    this.kind = "storage_object";
    this.data = data;
  }

  get url() {
    return typeof this.data.url === "string" ? this.data.url : null;
  }

  get dataType() {
    return typeof this.data.data_type === "string" ? this.data.data_type : null;
  }

  toJSON() {
    return { storage_object: this.data };
  }
}

/** Any other output: its kind (the wire key, e.g. "object_detection") and JSON data. */
export class TaskOutput {
  constructor(kind, data) {
    if (typeof kind !== "string" || !kind) throw new TypeError("a task output's kind must be a non-empty string");
    this.kind = kind;
    this.data = data;
  }

  toJSON() {
    return { [this.kind]: this.data };
  }
}

/** The typed output for a one-key wire object. */
export function outputFromJSON(obj) {
  const keys = isPlainObject(obj) ? Object.keys(obj) : [];
  if (keys.length !== 1) {
    throw new TypeError("an input or output must be a JSON object with exactly one key (its kind)");
  }
  const kind = keys[0];
  if (kind === "image") return new ImageOutput(obj.image);
  if (kind === "storage_object") return new StorageObjectOutput(obj.storage_object);
  if (kind === "ref") {
    const ref = new RefOutput(obj.ref);
    return ref.of === "image" ? new ImageOutput(null, ref) : ref;
  }
  return new TaskOutput(kind, obj[kind]);
}

// -- results and progress ------------------------------------------------------

/** The outputs of a finished run. */
export class Results {
  constructor(outputs = [], uuid = null) {
    this.outputs = Object.freeze([...outputs]);
    this.uuid = uuid;
  }

  /** The number of outputs. */
  get length() {
    return this.outputs.length;
  }

  /**
   * Output `index`; with `expect` (say `ImageOutput`), a TypeError unless it is one.
   * @param {number} [index]
   */
  getOutput(index = 0, expect) {
    if (!Number.isInteger(index) || index < 0 || index >= this.outputs.length) {
      throw new RangeError(`output index ${index} out of range: the run has ${this.outputs.length} output(s)`);
    }
    const output = this.outputs[index];
    if (expect !== undefined && !(output instanceof expect)) {
      throw new TypeError(`output ${index} is ${output.constructor.name} ('${output.kind}'), not ${expect.name}`);
    }
    return output;
  }

  /** All outputs, in order. */
  getOutputs() {
    return [...this.outputs];
  }

  /** Resolve the URLs of the outputs served by reference against `base` (the run's URL). */
  resolveUrls(base) {
    for (const output of this.outputs) {
      if (output instanceof RefOutput) output.resolve(base);
      else if (output instanceof ImageOutput && output.ref !== null) output.ref.resolve(base);
    }
    return this;
  }

  /** The first image output, or null: the common case in one call. */
  firstImage() {
    return this.outputs.find((output) => output instanceof ImageOutput) ?? null;
  }

  [Symbol.iterator]() {
    return this.outputs[Symbol.iterator]();
  }

  toJSON() {
    return { uuid: this.uuid, outputs: this.outputs.map((output) => output.toJSON()) };
  }

  /** Results from their wire form; a TypeError saying what is wrong otherwise. */
  static fromJSON(obj) {
    if (!isPlainObject(obj)) throw new TypeError(`results must be a JSON object, not ${typeName(obj)}`);
    const outputs = obj.outputs ?? [];
    if (!Array.isArray(outputs)) throw new TypeError("results.outputs must be a list");
    return new Results(outputs.map(outputFromJSON), optionalString(obj, "uuid", "results"));
  }
}

function optionalString(obj, key, where) {
  const value = obj[key] ?? null;
  if (value !== null && typeof value !== "string") throw new TypeError(`${where}.${key} must be a string or null`);
  return value;
}

function etaBound(value) {
  if (value === null || value === undefined) return null;
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new TypeError("eta must be a list of two numbers (milliseconds) or nulls");
  }
  return Math.round(value);
}

function parseEta(value) {
  if (value === null || value === undefined) return [null, null];
  if (!Array.isArray(value) || value.length !== 2) {
    throw new TypeError("eta must be a list of two numbers (milliseconds) or nulls");
  }
  return [etaBound(value[0]), etaBound(value[1])];
}

/** One state report of a run; the final one carries `results`. */
export class Progress {
  constructor({ state, eta = [null, null], runId = null, uuid = null, name = null, fraction = null, results = null }) {
    if (fraction !== null && !(fraction >= 0 && fraction <= 1)) {
      throw new TypeError(`fraction must be between 0 and 1, not ${fraction}`);
    }
    /** PENDING, STARTED, SUCCESS, ... (any string). */
    this.state = state;
    /** Remaining time in milliseconds, `[lower, upper]`; either may be null. */
    this.eta = eta;
    /** ikproxy's id of the run. */
    this.runId = runId;
    /** The deployment's own id of the run, once known. */
    this.uuid = uuid;
    /** The task's name. */
    this.name = name;
    /** 0 to 1 when the deployment knows it, else null. */
    this.fraction = fraction;
    /** The run's results, on the final progress only. */
    this.results = results;
  }

  /** True on the final progress, the one that carries the results. */
  get done() {
    return this.results !== null;
  }

  toJSON() {
    const obj = {
      state: this.state,
      eta: [...this.eta],
      run_id: this.runId,
      uuid: this.uuid,
      name: this.name,
      fraction: this.fraction,
    };
    if (this.results !== null) obj.results = this.results.toJSON();
    return obj;
  }

  /** A progress from its wire form; a TypeError saying what is wrong otherwise. */
  static fromJSON(obj) {
    if (!isPlainObject(obj)) throw new TypeError(`progress must be a JSON object, not ${typeName(obj)}`);
    if (typeof obj.state !== "string") throw new TypeError("progress.state must be a string");
    const fraction = obj.fraction ?? null;
    if (fraction !== null && (typeof fraction !== "number" || !Number.isFinite(fraction))) {
      throw new TypeError("progress.fraction must be a number or null");
    }
    const results = obj.results ?? null;
    return new Progress({
      state: obj.state,
      eta: parseEta(obj.eta),
      runId: optionalString(obj, "run_id", "progress"),
      uuid: optionalString(obj, "uuid", "progress"),
      name: optionalString(obj, "name", "progress"),
      fraction,
      results: results === null ? null : Results.fromJSON(results),
    });
  }
}

// -- SSE decoding (WHATWG "Parsing an event stream") ---------------------------

/** The default limit on one SSE event (its lines, comments included), as in Python. */
export const DEFAULT_MAX_EVENT_BYTES = 64 * 1024 * 1024;

const LINE_END = /\r\n|\r|\n/g;

/**
 * Incremental Server-Sent Events parser: feed text as it arrives, get events out.
 * CR, LF and CRLF line ends (a CRLF split across chunks included), comments,
 * one optional space after the colon, multi-line data joined with LF, `id`
 * (ignored if it holds NUL) and `retry` (digits only); one byte order mark at
 * the start of the stream is dropped. An unfinished event at the end of the
 * stream is discarded, as the spec says.
 * `maxEventLength` bounds one event, so a stream without blank lines cannot
 * exhaust memory.
 */
export class SSEDecoder {
  constructor({ maxEventLength = DEFAULT_MAX_EVENT_BYTES } = {}) {
    this.maxEventLength = maxEventLength;
    this.lastEventId = "";
    this.retry = null;
    this._line = []; // pieces of the unfinished line
    this._size = 0; // characters of the current event so far, line ends counted as one
    this._skipLF = false; // the previous chunk ended with CR: an LF next belongs to it
    this._type = "";
    this._data = [];
    this._started = false;
  }

  /**
   * Take the next text of the stream; return the events it completes. On a
   * malformed stream the error's `decoded` holds the events completed before it.
   */
  feed(text) {
    const events = [];
    try {
      this._feed(text, events);
    } catch (error) {
      error.decoded = events;
      throw error;
    }
    return events;
  }

  _feed(text, events) {
    let start = 0;
    if (!this._started && text.length > 0) {
      this._started = true;
      if (text.charCodeAt(0) === 0xfeff) start = 1;
    }
    if (this._skipLF && start < text.length) {
      if (text.charCodeAt(start) === 10) start += 1;
      this._skipLF = false;
    }
    LINE_END.lastIndex = start;
    let match;
    while ((match = LINE_END.exec(text)) !== null) {
      let line = text.slice(start, match.index);
      this._grow(line.length + 1);
      if (this._line.length > 0) {
        this._line.push(line);
        line = this._line.join("");
        this._line = [];
      }
      this._processLine(line, events);
      start = LINE_END.lastIndex;
      if (match[0] === "\r" && start === text.length) this._skipLF = true;
    }
    if (start < text.length) {
      const rest = text.slice(start);
      this._grow(rest.length);
      this._line.push(rest);
    }
  }

  /** The end of the stream: an event not ended by a blank line is discarded. */
  close() {
    this._line = [];
    this._data = [];
    this._type = "";
    this._size = 0;
    return [];
  }

  _grow(length) {
    this._size += length;
    if (this._size > this.maxEventLength) {
      throw malformed(`event exceeds max_event_bytes (${this.maxEventLength} bytes)`);
    }
  }

  _processLine(line, events) {
    if (line === "") {
      if (this._data.length > 0) {
        events.push({ type: this._type || "message", data: this._data.join("\n"), id: this.lastEventId });
      }
      this._type = "";
      this._data = [];
      this._size = 0;
      return;
    }
    if (line.charCodeAt(0) === 58) return; // ":" starts a comment
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon !== -1) {
      field = line.slice(0, colon);
      value = line.slice(colon + (line.charCodeAt(colon + 1) === 32 ? 2 : 1));
    }
    if (field === "event") {
      this._type = value;
    } else if (field === "data") {
      this._data.push(value);
    } else if (field === "id") {
      if (!value.includes("\0")) this.lastEventId = value;
    } else if (field === "retry") {
      if (/^[0-9]+$/.test(value)) this.retry = Number(value);
    }
  }
}

// -- NDJSON decoding ------------------------------------------------------------

const LF = 10;
const CR = 13;

/**
 * Incremental NDJSON decoder: feed bytes, get parsed values out. LF or CRLF line
 * ends; blank lines skipped (but counted, so line numbers match an editor); a
 * last line without LF accepted at `close()`; strict UTF-8 without BOM.
 */
export class NDJSONDecoder {
  constructor({ maxLineBytes = DEFAULT_MAX_LINE_BYTES } = {}) {
    this.maxLineBytes = maxLineBytes;
    this._pending = [];
    this._pendingSize = 0;
    this._lines = 0;
    this._utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  }

  /**
   * Take the next bytes of the stream; return the values of the lines they complete.
   * On a malformed line the error's `decoded` holds the values of the lines before it.
   */
  feed(chunk) {
    const values = [];
    try {
      this._feed(chunk, values);
    } catch (error) {
      error.decoded = values;
      throw error;
    }
    return values;
  }

  _feed(chunk, values) {
    let start = 0;
    let end;
    while ((end = chunk.indexOf(LF, start)) !== -1) {
      let line = chunk.subarray(start, end);
      if (this._pending.length > 0) {
        this._pending.push(line);
        line = concat(this._pending, this._pendingSize + line.length);
        this._pending = [];
        this._pendingSize = 0;
      }
      this._lines += 1;
      this._checkLength(line.length - (line[line.length - 1] === CR ? 1 : 0));
      this._decode(line, values);
      start = end + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.slice(start);
      this._pendingSize += rest.length;
      this._checkLength(this._pendingSize - (rest[rest.length - 1] === CR ? 1 : 0), this._lines + 1);
      this._pending.push(rest);
    }
  }

  /** The end of the stream: the value of a last line without LF, if any. */
  close() {
    const values = [];
    if (this._pending.length > 0) {
      const line = concat(this._pending, this._pendingSize);
      this._pending = [];
      this._pendingSize = 0;
      this._lines += 1;
      this._checkLength(line.length);
      this._decode(line, values);
    }
    return values;
  }

  _checkLength(size, lineNumber = this._lines) {
    if (size > this.maxLineBytes) throw malformed(`line ${lineNumber}: line exceeds ${this.maxLineBytes} bytes`);
  }

  _decode(line, values) {
    if (line[0] === 0xef && line[1] === 0xbb && line[2] === 0xbf) {
      throw malformed(`line ${this._lines}: unexpected byte order mark (NDJSON is UTF-8 without BOM)`);
    }
    let text;
    try {
      text = this._utf8.decode(line);
    } catch {
      throw malformed(`line ${this._lines}: invalid UTF-8`);
    }
    if (/^[ \t\r]*$/.test(text)) return; // blank: JSON whitespace only
    try {
      values.push(JSON.parse(text));
    } catch (error) {
      throw malformed(`line ${this._lines}: invalid JSON (${error.message})`);
    }
  }
}

function concat(pieces, size) {
  const out = new Uint8Array(size);
  let offset = 0;
  for (const piece of pieces) {
    out.set(piece, offset);
    offset += piece.length;
  }
  return out;
}

// -- the protocol reader (sans-I/O) -----------------------------------------------

/** Wire bytes (or NDJSON objects) in, progress and a final outcome out. */
class Reader {
  constructor(format = null) {
    this.format = format;
    this.results = null;
    this.failure = null;
    /** The id of the last progress or result event read: where a resumable run resumes. */
    this.lastId = null;
    // Bad bytes become U+FFFD, as SSE says; the SSE decoder drops the one leading BOM.
    this._text = new TextDecoder("utf-8", { ignoreBOM: true });
    this._sse = new SSEDecoder();
    this._ndjson = new NDJSONDecoder();
    this._head = []; // whitespace seen before the format is known
  }

  feed(chunk) {
    if (this.format === null) {
      const first = chunk.findIndex((byte) => byte !== 0x20 && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d);
      if (first === -1) {
        if (chunk.length > 0) this._head.push(chunk);
        return [];
      }
      this.format = chunk[first] === 0x7b || chunk[first] === 0x5b ? "ndjson" : "sse"; // "{" or "["
      const head = this._head;
      this._head = [];
      return [...head, chunk].flatMap((piece) => this._decode(piece));
    }
    return this._decode(chunk);
  }

  close() {
    if (this.format === null) return [];
    if (this.format === "ndjson") return this._collect(() => this._ndjson.close());
    const out = this._collect(() => this._sse.feed(this._text.decode()));
    this._sse.close();
    return out;
  }

  _decode(chunk) {
    if (this.format === "sse") return this._collect(() => this._sse.feed(this._text.decode(chunk, { stream: true })));
    return this._collect(() => this._ndjson.feed(chunk));
  }

  /**
   * The progress items of what `decode()` decodes. A failure (an `error` event, a
   * malformed stream) is kept in `failure`, so the items before it are delivered first.
   */
  _collect(decode) {
    const out = [];
    if (this.failure !== null) return out;
    try {
      let items;
      try {
        items = decode();
      } catch (error) {
        this._deliver(error.decoded ?? [], out); // what came before the bad part
        throw error;
      }
      this._deliver(items, out);
    } catch (error) {
      this.failure = error;
    }
    return out;
  }

  _deliver(items, out) {
    for (const item of items) out.push(...(this.format === "sse" ? this.event(item) : this.object(item)));
  }

  /** One SSE event: only the types this protocol knows are parsed. */
  event(event) {
    if (this.results !== null || !["progress", "result", "error"].includes(event.type)) return [];
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      throw malformed("event data is not JSON");
    }
    const items = this.message(event.type, data);
    if (event.id) this.lastId = event.id;
    return items;
  }

  /** One NDJSON wire object (with its `type`). */
  object(value) {
    if (!isPlainObject(value)) throw malformed("a line is not a JSON object");
    const items = this.message(value.type, value);
    if (value.type !== "keepalive" && (typeof value.id === "string" || typeof value.id === "number")) {
      this.lastId = String(value.id);
    }
    return items;
  }

  message(kind, data) {
    if (this.results !== null || kind === "keepalive") return [];
    if (kind === "error") {
      if (!isPlainObject(data)) throw malformed("error event is not an object");
      throw new StreamError(
        String(data.code || "internal"),
        String(data.message || "The run failed."),
        typeof data.request_id === "string" ? data.request_id : null,
      );
    }
    if (kind !== "progress" && kind !== "result") return []; // types of later protocol versions
    let progress;
    try {
      progress = Progress.fromJSON(data);
    } catch (error) {
      throw malformed(error.message);
    }
    if (kind === "result") {
      if (progress.results === null) throw malformed("result event without results");
      this.results = progress.results;
    }
    return [progress];
  }

  outcome() {
    if (this.results === null) throw new IncompleteStream();
    return this.results;
  }
}

async function notify(onProgress, items) {
  if (!onProgress) return;
  for (const item of items) {
    const outcome = onProgress(item);
    if (outcome && typeof outcome.then === "function") await outcome;
  }
}

const encoder = new TextEncoder();

function asBytes(chunk) {
  if (chunk instanceof Uint8Array) return chunk;
  if (typeof chunk === "string") return encoder.encode(chunk);
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new TypeError(`a stream chunk must be a Uint8Array, an ArrayBuffer or a string, not ${typeName(chunk)}`);
}

// A read error from a fetch body means the connection dropped: the stream was cut.
function cut(error) {
  if (error instanceof IkproxyError || error?.name === "AbortError") return error;
  return new IncompleteStream("the connection was lost before the result or error event", { cause: error });
}

/** Feed `reader` from a ReadableStream or an (async) iterable of chunks, item by item. */
async function consume(source, reader, onProgress, asItems) {
  if (source && typeof source.getReader === "function") {
    const streamReader = source.getReader();
    let finished = false;
    try {
      for (;;) {
        let step;
        try {
          step = await streamReader.read();
        } catch (error) {
          throw cut(error);
        }
        if (step.done) {
          finished = true;
          break;
        }
        await notify(onProgress, asItems(step.value));
        if (reader.failure !== null) throw reader.failure;
        if (reader.results !== null) return reader.results;
      }
    } finally {
      // Done early (a result, an error, a throwing callback): stop the download,
      // which, over fetch, closes the connection and so the run on the server.
      if (!finished) streamReader.cancel().catch(() => {});
      else streamReader.releaseLock();
    }
  } else if (source && (typeof source[Symbol.asyncIterator] === "function" || typeof source[Symbol.iterator] === "function")) {
    for await (const chunk of source) {
      await notify(onProgress, asItems(chunk));
      if (reader.failure !== null) throw reader.failure;
      if (reader.results !== null) return reader.results;
    }
  } else {
    throw new TypeError(`expected a ReadableStream or an iterable of chunks, not ${typeName(source)}`);
  }
  await notify(onProgress, reader.close());
  if (reader.failure !== null) throw reader.failure;
  return reader.outcome();
}

// -- public consumers -------------------------------------------------------------

/**
 * Consume wire bytes (SSE, or NDJSON when the first byte is `{`) into `Results`.
 * `stream` is a `ReadableStream<Uint8Array>` or an (async) iterable of chunks.
 */
export async function processReadableStream(stream, onProgress, { format = null } = {}) {
  checkFormat(format);
  const reader = new Reader(format);
  return consume(stream, reader, onProgress, (chunk) => reader.feed(asBytes(chunk)));
}

/**
 * Consume an NDJSON stream: a `ReadableStream` of bytes, a string, bytes, or an
 * (async) iterable of already-parsed wire objects (or of byte/text chunks).
 */
export async function processJsonStream(source, onProgress) {
  const reader = new Reader("ndjson");
  if (typeof source === "string" || source instanceof ArrayBuffer || ArrayBuffer.isView(source)) {
    source = [asBytes(source)];
  }
  return consume(source, reader, onProgress, (item) =>
    typeof item === "string" || item instanceof ArrayBuffer || ArrayBuffer.isView(item)
      ? reader.feed(asBytes(item))
      : reader.object(item),
  );
}

function formatOf(response) {
  const contentType = response.headers.get("content-type") ?? "";
  if (contentType.includes("ndjson")) return "ndjson";
  if (contentType.includes("event-stream")) return "sse";
  return null;
}

/** The seconds of a `Retry-After` header (delta-seconds, or an HTTP date), or null. */
function retryAfterOf(response) {
  const value = response.headers.get("retry-after");
  if (value === null) return null;
  if (/^\s*\d+\s*$/.test(value)) return Number(value);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

async function httpError(response) {
  let code = "http_error";
  let message = `HTTP ${response.status}`;
  let requestId = null;
  try {
    const error = JSON.parse(await response.text()).error;
    if (error.code === undefined || error.message === undefined) throw new TypeError("not an ikproxy error body");
    code = String(error.code);
    message = String(error.message);
    requestId = typeof error.request_id === "string" ? error.request_id : null;
  } catch {
    // not our JSON error body (a gateway's HTML page, say): keep the status alone
  }
  return new StreamError(code, message, requestId, { status: response.status, retryAfter: retryAfterOf(response) });
}

/**
 * Consume a fetch `Response` from an ikproxy endpoint into `Results`. An HTTP
 * error status rejects with a `StreamError` carrying the body's code and message,
 * and `status`.
 */
export async function processStreamingResponse(response, onProgress) {
  return consumeResponse(response, onProgress, new Reader());
}

async function consumeResponse(response, onProgress, reader) {
  if (!response.ok) throw await httpError(response);
  if (response.body === null) throw new IncompleteStream("the response has no body");
  reader.format = formatOf(response);
  const results = await consume(response.body, reader, onProgress, (chunk) => reader.feed(asBytes(chunk)));
  // Outputs by reference come with URLs relative to the run request's URL.
  return results.resolveUrls(response.url || baseUrl());
}

// A resumable run's event ids are `<token>:<n>` (see docs/protocol.md).
const isResumePosition = (id) => typeof id === "string" && /^.+:\d+$/.test(id);

// -- run: build the request, fetch, consume -----------------------------------------

function checkFormat(format) {
  if (format !== null && format !== undefined && format !== "sse" && format !== "ndjson") {
    throw new TypeError(`format must be "sse" or "ndjson", not ${JSON.stringify(format)}`);
  }
}

const isBlob = (value) => typeof Blob !== "undefined" && value instanceof Blob;

function baseUrl() {
  return globalThis.location?.href ?? "http://localhost/";
}

/**
 * Run a job through an ikproxy endpoint and resolve to its `Results`.
 *
 * Plain parameters go in a GET query string; with an `image` (a File or Blob, a
 * list of them, or a data URL) or a Blob parameter, the request is a POST
 * (multipart for Blobs, JSON for data URLs). `signal` aborts the request, which
 * closes the run on the server. `headers` are added to the request
 * (`Authorization`, say). `format` picks SSE (default) or NDJSON.
 *
 * When the server keeps runs resumable (its `resume_window`), a stream cut by a
 * lost connection is resumed from its last event id (sent as the `Last-Event-ID`
 * header), up to `resume` times (3 by default), with the same headers; `onProgress`
 * simply goes on. A resume refused with 429 or 503 and a `Retry-After` of at most
 * `maxRetryAfter` seconds (30) is tried again once that time has passed; aborting
 * `signal` ends the wait.
 */
export async function run(url, params = {}, options = {}) {
  const {
    onProgress,
    signal,
    format = null,
    image = null,
    headers = {},
    resume = 3,
    maxRetryAfter = 30,
    fetch: fetchImpl = globalThis.fetch,
  } = options;
  checkFormat(format);
  const target = new URL(url, baseUrl());
  if (format) target.searchParams.set("format", format);
  const init = {
    method: "GET",
    signal,
    headers: { Accept: format === "ndjson" ? NDJSON_MEDIA_TYPE : SSE_MEDIA_TYPE, ...headers },
  };
  const images = image === null || image === undefined ? [] : Array.isArray(image) ? image : [image];
  const entries = Object.entries(params).filter(([, value]) => value !== null && value !== undefined);
  if (images.some(isBlob) || entries.some(([, value]) => isBlob(value))) {
    const form = new FormData();
    for (const [name, value] of entries) {
      if (isBlob(value)) form.append(name, value, value.name || name);
      else form.append(name, String(value));
    }
    for (const item of images) {
      if (!isBlob(item)) throw new TypeError("mix of Blob and non-Blob images: pass Files/Blobs or data URLs, not both");
      form.append("image", item, item.name || "image");
    }
    init.method = "POST";
    init.body = form;
  } else if (images.length > 0) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify({ ...Object.fromEntries(entries), image: images.length === 1 ? images[0] : images });
  } else {
    for (const [name, value] of entries) target.searchParams.set(name, String(value));
  }
  const send = async (href, request) => {
    try {
      return await fetchImpl(href, request);
    } catch (error) {
      if (error?.name === "AbortError") throw error;
      throw new StreamError("network_error", "The server could not be reached.", null, { cause: error });
    }
  };
  let response = await send(target.href, init);
  let position = null; // the last event seen, once a stream was cut: where to resume
  for (let attempt = 1; ; attempt++) {
    const reader = new Reader();
    try {
      return await consumeResponse(response, onProgress, reader);
    } catch (error) {
      if (isResumePosition(reader.lastId)) position = reader.lastId;
      const delay = resumeDelay(error, position, attempt, maxRetryAfter);
      if (delay === null || attempt > resume || signal?.aborted) throw error;
      await sleep(delay, signal);
      // Resume: a GET naming the last event seen; the server replays what followed.
      const resumeHeaders = { ...init.headers, "Last-Event-ID": position };
      delete resumeHeaders["Content-Type"];
      response = await send(target.href, { method: "GET", signal, headers: resumeHeaders });
    }
  }
}

/**
 * How long to wait before resuming after `error` (ms), or null not to resume: a
 * stream cut after a resumable event (a short backoff), or a resume refused with
 * 429/503 and a `Retry-After` within `maxRetryAfter` seconds (that long).
 */
function resumeDelay(error, position, attempt, maxRetryAfter) {
  if (position === null) return null;
  if (error instanceof IncompleteStream) return 100 * 2 ** (attempt - 1);
  const refused = error instanceof StreamError && (error.status === 429 || error.status === 503);
  if (!refused || error.retryAfter === null || error.retryAfter > maxRetryAfter) return null;
  return error.retryAfter * 1000;
}

/** Wait `ms`; rejects with the abort reason as soon as `signal` aborts. */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const aborted = () => signal.reason ?? new DOMException("The operation was aborted.", "AbortError");
    if (signal?.aborted) {
      reject(aborted());
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(aborted());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

// -- a smooth progress estimate, for progress bars ---------------------------------

/**
 * Turns progress events into a smooth fraction for a progress bar.
 *
 * Between events the fraction moves from the last known value toward 1, reaching
 * it when the ETA's upper bound runs out; it never goes backwards and stays below
 * `cap` (0.99) until the result arrives. Call `update(progress)` on each event and
 * `fractionAt(now)` on each animation frame.
 */
export class ProgressEstimate {
  constructor({ cap = 0.99, now = () => performance.now() } = {}) {
    this.cap = cap;
    this._now = now;
    this._from = 0; // the fraction at the last event
    this._at = null; // when the last event came
    this._remaining = null; // ms left at the last event (the ETA's upper bound)
    this._shown = 0;
    this.done = false;
  }

  /** Record one progress event. */
  update(progress, now = this._now()) {
    const current = this.fractionAt(now);
    if (progress.done) {
      this.done = true;
      this._shown = 1;
      return;
    }
    const upper = progress.eta?.[1] ?? null;
    const lower = progress.eta?.[0] ?? null;
    this._remaining = upper ?? lower;
    this._from = Math.min(this.cap, Math.max(current, progress.fraction ?? current));
    this._shown = this._from;
    this._at = now;
  }

  /** The fraction to show at time `now` (ms, from `performance.now()`). */
  fractionAt(now = this._now()) {
    if (this.done) return 1;
    if (this._at !== null && this._remaining !== null) {
      const span = Math.max(this._remaining, 1);
      const t = Math.min(1, Math.max(0, (now - this._at) / span));
      const value = this._from + (1 - this._from) * t;
      this._shown = Math.max(this._shown, Math.min(this.cap, value));
    }
    return this._shown;
  }

  /** Milliseconds left by the last ETA's upper bound, counted down; null if unknown. */
  remainingAt(now = this._now()) {
    if (this.done) return 0;
    if (this._at === null || this._remaining === null) return null;
    return Math.max(0, this._remaining - (now - this._at));
  }
}

/** A short human form of a duration in ms: "4 s", "1 min 5 s", "less than a second". */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "";
  if (ms < 1000) return "less than a second";
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  const rest = seconds % 60;
  return rest ? `${minutes} min ${rest} s` : `${minutes} min`;
}
