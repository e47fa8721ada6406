import { deflateSync } from 'node:zlib';
import type { EngineInfo, GeneratedImage, ImageEngine, ImageRequest } from './engine';

/**
 * A deterministic `ImageEngine` for the server's tests: real (tiny) PNGs whose pixels are a hash of the expert and
 * the request (prompt, seed, steps, guidance, size) and of nothing else, a configurable delay per call, and a record
 * of every call. Routing: a prompt starting with `e<k>:` goes to expert k, any other to hash(prompt) mod #experts.
 */
export interface FakeEngineOptions {
  /** Number of experts (ids 0..n-1). */
  experts?: number;
  /** Delay of each generate call (ms), or a function of (expertId, batch size). */
  generateDelayMs?: number | ((expertId: number, batchSize: number) => number);
  routeDelayMs?: number;
  info?: Partial<Pick<EngineInfo, 'defaults' | 'limits'>>;
  /** Throw from generate for this expert (tests error paths). */
  failExpert?: number;
}

export interface GenerateCall {
  expertId: number;
  requests: ImageRequest[];
  startMs: number;
  endMs: number;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  out.set(data, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** Encodes 8-bit RGB pixels ([height, width, 3], row-major) as a PNG file. */
export function encodePngRgb(rgb: Uint8Array, width: number, height: number): Uint8Array {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // bit depth 8, colour type 2 (RGB), deflate, adaptive filter, no interlace
  const raw = Buffer.alloc(height * (1 + width * 3));
  for (let y = 0; y < height; y++) {
    raw[y * (1 + width * 3)] = 0; // filter: none
    raw.set(rgb.subarray(y * width * 3, (y + 1) * width * 3), y * (1 + width * 3) + 1);
  }
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return new Uint8Array(Buffer.concat([signature, chunk('IHDR', header), chunk('IDAT', deflateSync(raw)), chunk('IEND', new Uint8Array(0))]));
}

function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** The fake image of one request on one expert: depends on nothing else. */
export function fakeImage(expertId: number, r: ImageRequest): Uint8Array {
  let s = fnv1a(JSON.stringify([expertId, r.prompt, r.seed, r.steps, r.guidance, r.width, r.height]));
  const rgb = new Uint8Array(r.width * r.height * 3);
  for (let i = 0; i < rgb.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    rgb[i] = s >>> 24;
  }
  return encodePngRgb(rgb, r.width, r.height);
}

/** Routing rule of the fake engine. */
export function fakeRoute(prompt: string, experts: number): number {
  const m = /^e(\d+):/.exec(prompt);
  return m ? Number(m[1]) : fnv1a(prompt) % experts;
}

const delay = (ms: number): Promise<void> => (ms > 0 ? new Promise((r) => setTimeout(r, ms)) : Promise.resolve());

export class FakeEngine implements ImageEngine {
  readonly info: EngineInfo;
  readonly routeCalls: string[][] = [];
  readonly generateCalls: GenerateCall[] = [];
  /** Most engine calls running at the same time (the server must keep this at 1). */
  maxConcurrentCalls = 0;
  disposed = false;
  private active = 0;

  constructor(private readonly options: FakeEngineOptions = {}) {
    const n = options.experts ?? 3;
    this.info = {
      experts: Array.from({ length: n }, (_, id) => ({ id, macs: 1_000_000 * (n - id), name: `expert-${id}` })),
      defaults: { steps: 4, guidance: 7.5, width: 8, height: 8, ...options.info?.defaults },
      limits: { maxSteps: 50, maxSize: 64, sizeMultiple: 8, ...options.info?.limits },
    };
  }

  private async call<T>(ms: number, f: () => T): Promise<T> {
    this.active++;
    this.maxConcurrentCalls = Math.max(this.maxConcurrentCalls, this.active);
    try {
      await delay(ms);
      return f();
    } finally {
      this.active--;
    }
  }

  route(prompts: readonly string[]): Promise<number[]> {
    this.routeCalls.push([...prompts]);
    const n = this.info.experts.length;
    return this.call(this.options.routeDelayMs ?? 0, () => prompts.map((p) => fakeRoute(p, n)));
  }

  generate(expertId: number, requests: readonly ImageRequest[]): Promise<GeneratedImage[]> {
    const d = this.options.generateDelayMs ?? 0;
    const ms = typeof d === 'function' ? d(expertId, requests.length) : d;
    const call: GenerateCall = { expertId, requests: requests.map((r) => ({ ...r })), startMs: performance.now(), endMs: NaN };
    this.generateCalls.push(call);
    return this.call(ms, () => {
      call.endMs = performance.now();
      if (expertId === this.options.failExpert) throw new Error(`expert ${expertId} is broken`);
      return requests.map((r) => ({ png: fakeImage(expertId, r), info: { scheduler: 'fake' } }));
    });
  }

  dispose(): void {
    this.disposed = true;
  }
}
