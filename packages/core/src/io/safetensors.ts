import * as fs from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { InputError } from '../errors';
import { writeFileAtomic } from './atomic';

/**
 * safetensors I/O (format: u64 LE header length N, N bytes of JSON `{name: {dtype, shape, data_offsets}}`, raw
 * little-endian data). Files are read tensor by tensor with positioned reads, so a 3.4 GB SD 2.1 UNet never needs
 * more than one copy of its weights in memory (Node cannot `readFileSync` files over 2 GiB).
 */
export type SafetensorsDtype = 'F32' | 'F16' | 'BF16' | 'I32' | 'I64' | 'F64';

const BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8, F64: 8 };

/** A tensor in host memory, row-major. F16/BF16 are widened to float32; I64 becomes int32 when every value fits. */
export interface HostTensor {
  dtype: 'float32' | 'int32' | 'float64' | 'int64';
  shape: number[];
  data: Float32Array | Int32Array | Float64Array | BigInt64Array;
}

export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Byte offsets relative to the data section. */
  dataOffsets: [number, number];
}

const MAX_HEADER = 100 * 1024 * 1024;

export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → IEEE half with round-to-nearest-even (as numpy / torch `.half()`). */
export function f32ToF16(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  e = half >>> 10;
  return sign | half;
}

/** An open safetensors file; read tensors one at a time, then `close()`. */
export class SafetensorsReader {
  readonly file: string;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Record<string, string>;
  private fd: number | null;
  private readonly dataStart: number;

  constructor(file: string) {
    this.file = file;
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (err) {
      throw new InputError('cannot open safetensors file', { code: 'E_FILE_MISSING', file, cause: err });
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size < 8) throw new InputError('file too short for a safetensors header', { code: 'E_SAFETENSORS', file, expected: '>= 8 bytes', found: `${size} bytes` });
      const lenBuf = Buffer.alloc(8);
      fs.readSync(fd, lenBuf, 0, 8, 0);
      const headerLen = Number(lenBuf.readBigUInt64LE(0));
      if (headerLen <= 0 || headerLen > MAX_HEADER || 8 + headerLen > size) {
        throw new InputError('corrupt safetensors header length', { code: 'E_SAFETENSORS', file, expected: `<= ${Math.min(MAX_HEADER, size - 8)}`, found: headerLen });
      }
      const headerBuf = Buffer.alloc(headerLen);
      fs.readSync(fd, headerBuf, 0, headerLen, 8);
      let header: Record<string, unknown>;
      try {
        header = JSON.parse(headerBuf.toString('utf8')) as Record<string, unknown>;
      } catch (err) {
        throw new InputError('safetensors header is not valid JSON', { code: 'E_SAFETENSORS', file, cause: err });
      }
      this.dataStart = 8 + headerLen;
      const dataSize = size - this.dataStart;
      const tensors = new Map<string, TensorInfo>();
      this.metadata = {};
      for (const [name, raw] of Object.entries(header)) {
        if (name === '__metadata__') {
          this.metadata = (raw ?? {}) as Record<string, string>;
          continue;
        }
        const info = raw as { dtype?: string; shape?: number[]; data_offsets?: [number, number] };
        const dtype = info.dtype as SafetensorsDtype;
        if (!(dtype in BYTES)) {
          throw new InputError('unsupported dtype', { code: 'E_SAFETENSORS_DTYPE', file, field: name, expected: Object.keys(BYTES).join('|'), found: info.dtype });
        }
        const shape = info.shape ?? [];
        const [begin, end] = info.data_offsets ?? [NaN, NaN];
        const count = shape.reduce((a, b) => a * b, 1);
        if (!(Number.isInteger(begin) && Number.isInteger(end)) || end - begin !== count * BYTES[dtype]) {
          throw new InputError('data_offsets do not match dtype and shape', { code: 'E_SAFETENSORS', file, field: name, expected: `${count * BYTES[dtype]} bytes for ${dtype}[${shape.join(',')}]`, found: `[${begin}, ${end}]` });
        }
        if (end > dataSize) {
          throw new InputError('file is truncated', { code: 'E_SAFETENSORS_TRUNCATED', file, field: name, expected: `data up to byte ${this.dataStart + end}`, found: `${size} bytes` });
        }
        tensors.set(name, { dtype, shape, dataOffsets: [begin, end] });
      }
      this.tensors = tensors;
      this.fd = fd;
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  keys(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new InputError('tensor not found', { code: 'E_TENSOR_MISSING', file: this.file, field: name });
    return info;
  }

  /** Reads one tensor into host memory (one positioned read into an aligned buffer). */
  read(name: string): HostTensor {
    if (this.fd === null) throw new InputError('reader is closed', { code: 'E_CLOSED', file: this.file });
    const info = this.info(name);
    const [begin, end] = info.dataOffsets;
    const bytes = new Uint8Array(end - begin);
    let got = 0;
    while (got < bytes.byteLength) {
      const n = fs.readSync(this.fd, bytes, got, bytes.byteLength - got, this.dataStart + begin + got);
      if (n === 0) throw new InputError('file is truncated', { code: 'E_SAFETENSORS_TRUNCATED', file: this.file, field: name });
      got += n;
    }
    return decode(bytes, info);
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}

function decode(bytes: Uint8Array, info: TensorInfo): HostTensor {
  const n = info.shape.reduce((a, b) => a * b, 1);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shape = [...info.shape];
  switch (info.dtype) {
    case 'F32': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      return { dtype: 'float32', shape, data: out };
    }
    case 'F64': {
      const out = new Float64Array(n);
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
      return { dtype: 'float64', shape, data: out };
    }
    case 'F16': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = f16ToF32(dv.getUint16(i * 2, true));
      return { dtype: 'float32', shape, data: out };
    }
    case 'BF16': {
      const out = new Float32Array(n);
      const o32 = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) o32[i] = dv.getUint16(i * 2, true) << 16;
      return { dtype: 'float32', shape, data: out };
    }
    case 'I32': {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(i * 4, true);
      return { dtype: 'int32', shape, data: out };
    }
    case 'I64': {
      const out = new BigInt64Array(n);
      for (let i = 0; i < n; i++) out[i] = dv.getBigInt64(i * 8, true);
      return { dtype: 'int64', shape, data: out };
    }
  }
}

/** Reads every tensor (or the named ones) of a file into host memory. */
export function readSafetensors(file: string, names?: readonly string[]): Map<string, HostTensor> {
  const reader = new SafetensorsReader(file);
  try {
    const out = new Map<string, HostTensor>();
    for (const name of names ?? reader.keys()) out.set(name, reader.read(name));
    return out;
  } finally {
    reader.close();
  }
}

/** Host tensor → tfjs tensor (float32 or int32; int64 values must fit in int32). */
export function toTfTensor(t: HostTensor, name = 'tensor'): tf.Tensor {
  if (t.dtype === 'float32') return tf.tensor(t.data as Float32Array, t.shape, 'float32');
  if (t.dtype === 'float64') return tf.tensor(Float32Array.from(t.data as Float64Array), t.shape, 'float32');
  if (t.dtype === 'int32') return tf.tensor(t.data as Int32Array, t.shape, 'int32');
  const src = t.data as BigInt64Array;
  const out = new Int32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const v = src[i]!;
    if (v > 2147483647n || v < -2147483648n) throw new InputError('int64 value does not fit in int32', { code: 'E_RANGE', field: name, found: v.toString() });
    out[i] = Number(v);
  }
  return tf.tensor(out, t.shape, 'int32');
}

/** Reads a file into tfjs tensors (caller owns and disposes them). */
export function loadSafetensors(file: string, names?: readonly string[]): Record<string, tf.Tensor> {
  const reader = new SafetensorsReader(file);
  const out: Record<string, tf.Tensor> = {};
  try {
    for (const name of names ?? reader.keys()) out[name] = toTfTensor(reader.read(name), name);
    return out;
  } catch (err) {
    tf.dispose(out);
    throw err;
  } finally {
    reader.close();
  }
}

export type WritableTensor = HostTensor | tf.Tensor;

export interface WriteSafetensorsOptions {
  /** Storage dtype for floating tensors (default: F32, and F64 for float64 host tensors). */
  dtype?: 'F32' | 'F16';
  metadata?: Record<string, string>;
}

function toHost(t: WritableTensor): HostTensor {
  if (t instanceof tf.Tensor) {
    const data = t.dataSync();
    if (t.dtype === 'int32' || t.dtype === 'bool') return { dtype: 'int32', shape: [...t.shape], data: Int32Array.from(data) };
    return { dtype: 'float32', shape: [...t.shape], data: data as Float32Array };
  }
  return t;
}

/** Encodes tensors (sorted by name, as the reference writer does) into safetensors bytes. */
export function encodeSafetensors(tensors: Record<string, WritableTensor>, options: WriteSafetensorsOptions = {}): Uint8Array[] {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', ...(options.metadata ?? {}) } };
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const name of names) {
    const t = toHost(tensors[name]!);
    const n = t.data.length;
    let dtype: SafetensorsDtype;
    let bytes: Uint8Array;
    if (t.dtype === 'int32') {
      dtype = 'I32';
      bytes = new Uint8Array(Int32Array.from(t.data as Int32Array).buffer);
    } else if (t.dtype === 'int64') {
      dtype = 'I64';
      bytes = new Uint8Array(BigInt64Array.from(t.data as BigInt64Array).buffer);
    } else if (t.dtype === 'float64' && options.dtype === undefined) {
      dtype = 'F64';
      bytes = new Uint8Array(Float64Array.from(t.data as Float64Array).buffer);
    } else if (options.dtype === 'F16') {
      dtype = 'F16';
      const h = new Uint16Array(n);
      for (let i = 0; i < n; i++) h[i] = f32ToF16((t.data as Float32Array)[i]!);
      bytes = new Uint8Array(h.buffer);
    } else {
      dtype = 'F32';
      bytes = new Uint8Array(Float32Array.from(t.data as Float32Array).buffer);
    }
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
    chunks.push(bytes);
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerBytes.byteLength));
  return [len, headerBytes, ...chunks];
}

/** Writes tensors to a safetensors file atomically (temp file + rename). */
export function writeSafetensors(file: string, tensors: Record<string, WritableTensor>, options: WriteSafetensorsOptions = {}): void {
  writeFileAtomic(file, encodeSafetensors(tensors, options));
}
