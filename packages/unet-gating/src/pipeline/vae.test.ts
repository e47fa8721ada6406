import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, InputError, NumericError, Rng, ShapeError } from '@aptp/core';
import { expectClose } from '@aptp/core/testing';
import { tempDir, vaeReference, writeVaeDecoder } from './testFixtures';
import { OrtVaeDecoder, PixelDecoder, toRgb8 } from './vae';

describe('OrtVaeDecoder (vae_decoder/model.onnx through ORT)', () => {
  it('divides by scaling_factor and runs the decoder, item by item', async () => {
    const dir = path.join(tempDir(), 'vae_decoder');
    const vae = writeVaeDecoder(dir, 4, 0.5);
    const dec = await OrtVaeDecoder.load(dir);
    try {
      expect(dec.scaleFactor).toBe(2);
      expect(dec.latentChannels).toBe(4);
      const dims = [3, 4, 3, 5];
      const latents = Rng.forKey(1, 'latents').normal(3 * 4 * 3 * 5);
      const out = await dec.decode({ data: latents, dims });
      expect(out.dims).toEqual([3, 3, 6, 10]);
      expectClose(out.data, vaeReference(vae, latents, dims), { name: 'vae sample', rtol: 1e-6 });
      // one item alone gives the same numbers as inside the batch
      const alone = await dec.decode({ data: latents.slice(60, 120), dims: [1, 4, 3, 5] });
      expect(Array.from(alone.data)).toEqual(Array.from(out.data.subarray(180, 360)));
      await expect(dec.decode({ data: new Float32Array(3 * 3 * 2 * 2), dims: [1, 3, 2, 2] })).rejects.toThrow(ShapeError);
    } finally {
      await dec.dispose();
      await dec.dispose();
    }
  });

  it('reads SD 2.1 defaults when config.json is absent and lists the expected files when model.onnx is', async () => {
    const dir = path.join(tempDir(), 'vae_decoder');
    writeVaeDecoder(dir);
    fs.rmSync(path.join(dir, 'config.json'));
    const dec = await OrtVaeDecoder.load(dir);
    expect(dec.config.scaling_factor).toBeCloseTo(0.18215, 10);
    expect(dec.scaleFactor).toBe(8);
    await dec.dispose();
    fs.rmSync(path.join(dir, 'model.onnx'));
    await expect(OrtVaeDecoder.load(dir)).rejects.toThrow(InputError);
    await expect(OrtVaeDecoder.load(dir)).rejects.toThrow(/model\.onnx/);
  });

  it('rejects a bad config value, naming the field', async () => {
    const dir = path.join(tempDir(), 'vae_decoder');
    writeVaeDecoder(dir);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ scaling_factor: 'x' }));
    await expect(OrtVaeDecoder.load(dir)).rejects.toThrow(ConfigError);
    await expect(OrtVaeDecoder.load(dir)).rejects.toThrow(/scaling_factor/);
  });
});

describe('toRgb8 and PixelDecoder', () => {
  it('maps [-1, 1] to 0…255 as diffusers (x/2 + 0.5, clamp, ×255, round)', async () => {
    const values = [-1, 1, 0, -2, 3, 0.5, -0.5, 0.00196];
    const dims = [1, 3, 1, values.length];
    const data = new Float32Array([...values, ...values.map((v) => -v), ...values.map(() => 0)]);
    const img = await new PixelDecoder().decode({ data, dims });
    expect(img.data).not.toBe(data);
    const [rgb] = toRgb8(img);
    const expected = (v: number) => Math.round(Math.min(1, Math.max(0, v / 2 + 0.5)) * 255);
    values.forEach((v, i) => {
      expect(rgb![i * 3]).toBe(expected(v));
      expect(rgb![i * 3 + 1]).toBe(expected(-v));
      expect(rgb![i * 3 + 2]).toBe(128);
    });
    expect(Array.from(rgb!.subarray(0, 9))).toEqual([0, 255, 128, 255, 0, 128, 128, 128, 128]);
  });

  it('replicates a grey channel and refuses non-finite pixels, naming the item', () => {
    const [g] = toRgb8({ data: new Float32Array([0.2, -0.2]), dims: [1, 1, 1, 2] });
    expect(Array.from(g!)).toEqual([153, 153, 153, 102, 102, 102]);
    expect(() => toRgb8({ data: new Float32Array([0, NaN]), dims: [2, 1, 1, 1] })).toThrow(NumericError);
    expect(() => toRgb8({ data: new Float32Array([0, NaN]), dims: [2, 1, 1, 1] })).toThrow(/images\[1\]/);
    expect(() => toRgb8({ data: new Float32Array(4), dims: [1, 2, 1, 2] })).toThrow(ShapeError);
  });
});
