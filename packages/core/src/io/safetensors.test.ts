import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { describeGolden } from '../testing/golden';
import { useTempDirs } from '../testing/tempDirs';
import { InputError } from '../errors';
import { SafetensorsReader, readSafetensors, writeSafetensors, f16ToF32, f32ToF16, loadSafetensors } from './safetensors';

const tmpDir = useTempDirs('aptp-st-');

describeGolden('unet-tiny', 'safetensors on the golden UNet', (dir) => {
  it('reads every tensor with the shapes of the golden README', () => {
    const r = new SafetensorsReader(path.join(dir, 'diffusion_pytorch_model.safetensors'));
    try {
      expect(r.keys()).toHaveLength(686);
      expect(r.info('conv_in.weight').shape).toEqual([16, 4, 3, 3]);
      expect(r.info('down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight').shape).toEqual([128, 16]);
      const w = r.read('conv_in.weight');
      expect(w.dtype).toBe('float32');
      expect(w.data).toHaveLength(16 * 4 * 9);
      expect(Array.from(w.data as Float32Array).every(Number.isFinite)).toBe(true);
    } finally {
      r.close();
    }
  });

  it('round-trips a golden file through write and read bit-exactly', () => {
    const src = readSafetensors(path.join(dir, 'io.safetensors'));
    const out = path.join(tmpDir(), 'copy.safetensors');
    writeSafetensors(out, Object.fromEntries(src));
    const back = readSafetensors(out);
    expect([...back.keys()].sort()).toEqual([...src.keys()].sort());
    for (const [k, v] of src) expect(Buffer.from(back.get(k)!.data.buffer).equals(Buffer.from(v.data.buffer))).toBe(true);
  });

  it('names the file and the problem for a truncated file', () => {
    const bytes = fs.readFileSync(path.join(dir, 'io.safetensors'));
    const out = path.join(tmpDir(), 'trunc.safetensors');
    fs.writeFileSync(out, bytes.subarray(0, bytes.length - 100));
    expect(() => readSafetensors(out)).toThrow(InputError);
    expect(() => readSafetensors(out)).toThrow(/trunc\.safetensors: .*file is truncated/);
  });
});

describe('safetensors', () => {
  it('converts half precision exactly for representable values and rounds to nearest even', () => {
    for (const v of [0, 1, -2, 0.5, 65504, 6.103515625e-5, 5.960464477539063e-8, -0.333251953125]) {
      expect(f16ToF32(f32ToF16(v))).toBe(v);
    }
    expect(f16ToF32(f32ToF16(1 + 2 ** -11))).toBe(1); // tie → even
    expect(f16ToF32(f32ToF16(1 + 3 * 2 ** -11))).toBe(1 + 2 ** -9);
    expect(f16ToF32(f32ToF16(1e6))).toBe(Infinity);
  });

  it('writes F16 and reads it back as float32; reads BF16, I32, I64', () => {
    const out = path.join(tmpDir(), 'h.safetensors');
    writeSafetensors(out, { a: { dtype: 'float32', shape: [2, 2], data: Float32Array.from([1, -0.5, 3.25, 1024]) } }, { dtype: 'F16' });
    const r = new SafetensorsReader(out);
    expect(r.info('a').dtype).toBe('F16');
    expect(Array.from(r.read('a').data as Float32Array)).toEqual([1, -0.5, 3.25, 1024]);
    r.close();
    // Hand-built BF16 / I32 / I64 file.
    const header = JSON.stringify({
      b: { dtype: 'BF16', shape: [2], data_offsets: [0, 4] },
      i: { dtype: 'I32', shape: [1], data_offsets: [4, 8] },
      l: { dtype: 'I64', shape: [1], data_offsets: [8, 16] },
    });
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    const data = Buffer.alloc(16);
    data.writeUInt16LE(0x3f80, 0); // 1.0
    data.writeUInt16LE(0xc040, 2); // -3.0
    data.writeInt32LE(-7, 4);
    data.writeBigInt64LE(123456789n, 8);
    const f = path.join(tmpDir(), 'm.safetensors');
    fs.writeFileSync(f, Buffer.concat([len, Buffer.from(header), data]));
    const m = readSafetensors(f);
    expect(Array.from(m.get('b')!.data as Float32Array)).toEqual([1, -3]);
    expect(Array.from(m.get('i')!.data as Int32Array)).toEqual([-7]);
    expect(Array.from(m.get('l')!.data as BigInt64Array)).toEqual([123456789n]);
    const ts = loadSafetensors(f);
    expect(ts.l!.dtype).toBe('int32');
    expect(Array.from(ts.l!.dataSync())).toEqual([123456789]);
    tf.dispose(ts);
  });

  it('keeps float64 host tensors as F64', () => {
    const out = path.join(tmpDir(), 'd.safetensors');
    const v = Float64Array.from([Math.PI, 1e-300, -2]);
    writeSafetensors(out, { d: { dtype: 'float64', shape: [3], data: v } });
    const back = readSafetensors(out).get('d')!;
    expect(back.dtype).toBe('float64');
    expect(Array.from(back.data as Float64Array)).toEqual(Array.from(v));
  });

  it('rejects corrupt headers, wrong offsets and missing files with the file name', () => {
    const d = tmpDir();
    const bad = path.join(d, 'bad.safetensors');
    fs.writeFileSync(bad, Buffer.from([1, 2, 3]));
    expect(() => readSafetensors(bad)).toThrow(/bad\.safetensors: file too short/);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(10n ** 12n);
    fs.writeFileSync(bad, Buffer.concat([len, Buffer.alloc(16)]));
    expect(() => readSafetensors(bad)).toThrow(/corrupt safetensors header length/);
    const header = JSON.stringify({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } });
    len.writeBigUInt64LE(BigInt(header.length));
    fs.writeFileSync(bad, Buffer.concat([len, Buffer.from(header), Buffer.alloc(8)]));
    expect(() => readSafetensors(bad)).toThrow(/w: data_offsets do not match dtype and shape/);
    expect(() => readSafetensors(path.join(d, 'nope.safetensors'))).toThrow(/nope\.safetensors: cannot open/);
  });

  it('writes atomically: no temp files are left and an existing file is replaced whole', () => {
    const d = tmpDir();
    const f = path.join(d, 'w.safetensors');
    writeSafetensors(f, { x: { dtype: 'float32', shape: [1], data: Float32Array.from([1]) } });
    writeSafetensors(f, { y: { dtype: 'float32', shape: [2], data: Float32Array.from([2, 3]) } });
    expect(fs.readdirSync(d)).toEqual(['w.safetensors']);
    expect([...readSafetensors(f).keys()]).toEqual(['y']);
  });

  it('reads tensor by tensor, never the whole file (positioned reads on a sparse 2.1 GiB file)', () => {
    // A file larger than Node's 2 GiB readFileSync limit: one small tensor at the start, one far past 2 GiB.
    const d = tmpDir();
    const f = path.join(d, 'big.safetensors');
    const bigCount = 2 ** 29 + 16; // 2 GiB + 64 bytes of F32
    const header = JSON.stringify({
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      big: { dtype: 'F32', shape: [bigCount], data_offsets: [8, 8 + bigCount * 4] },
      z: { dtype: 'F32', shape: [2], data_offsets: [8 + bigCount * 4, 16 + bigCount * 4] },
    });
    const padded = header + ' '.repeat((8 - (header.length % 8)) % 8);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(padded.length));
    const fd = fs.openSync(f, 'w');
    fs.writeSync(fd, Buffer.concat([len, Buffer.from(padded), Buffer.from(Float32Array.from([1, 2]).buffer)]));
    const zPos = 8 + padded.length + 8 + bigCount * 4;
    fs.writeSync(fd, Buffer.from(Float32Array.from([5, 6]).buffer), 0, 8, zPos);
    fs.closeSync(fd);
    expect(fs.statSync(f).size).toBeGreaterThan(2 ** 31);
    const m = readSafetensors(f, ['a', 'z']);
    expect(Array.from(m.get('a')!.data as Float32Array)).toEqual([1, 2]);
    expect(Array.from(m.get('z')!.data as Float32Array)).toEqual([5, 6]);
    fs.rmSync(d, { recursive: true, force: true });
  });
});
