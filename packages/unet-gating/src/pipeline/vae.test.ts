import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, InputError, NumericError, Rng, ShapeError } from '@aptp/core';
import { expectClose } from '@aptp/core/testing';
import { tempDir, vaeEncoderReference, vaeReference, writeVaeDecoder, writeVaeEncoder, type TinyVaeEncoder } from './testFixtures';
import { OrtVaeDecoder, OrtVaeEncoder, PixelDecoder, PixelEncoder, toRgb8 } from './vae';

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

describe('OrtVaeEncoder (vae_encoder/model.onnx through ORT)', () => {
  const dims = [3, 3, 4, 6];
  const n = 3 * 3 * 4 * 6;
  const images = Rng.forKey(2, 'images').uniform(n, -1, 1);
  const per = 4 * 2 * 3; // C·h·w
  const keyed = (ids: readonly string[]) => ids.map((id) => Rng.forKey(7, 'vae', id));
  const epsOf = (ids: readonly string[]) => keyed(ids).map((r) => r.normal(per));
  // Per latent channel: channel 0 has the clamped logvar 20 (std e^10), channel 1 the clamped −30 (std e^−15).
  const expectChannels = (out: Float32Array, ref: Float64Array, name: string) => {
    for (let b = 0; b < 3; b++)
      for (let c = 0; c < 4; c++) {
        const at = (b * 4 + c) * 6;
        expectClose(out.subarray(at, at + 6), ref.subarray(at, at + 6), { name: `${name}[${b}, ${c}]`, rtol: 2e-6 });
      }
  };

  async function load(layout: TinyVaeEncoder['layout'], options: { posterior?: 'sample' | 'mean'; shiftFactor?: number | null } = {}) {
    const dir = path.join(tempDir(), 'vae_encoder');
    const vae = writeVaeEncoder(dir, { layout, shiftFactor: options.shiftFactor ?? null });
    return { dir, vae, enc: await OrtVaeEncoder.load(dir, { posterior: options.posterior }) };
  }

  it('latent_parameters: x0 = scaling·(mean + exp(clamp(logvar)/2)·ε) with keyed ε, item by item', async () => {
    const { vae, enc } = await load('latent_parameters');
    try {
      expect(enc.scaleFactor).toBe(2);
      expect(enc.latentChannels).toBe(4);
      expect(enc.needsNoise).toBe(true);
      const ids = ['a', 'b', 'c'];
      const out = await enc.encode({ data: images, dims }, { rngs: keyed(ids) });
      expect(out.dims).toEqual([3, 4, 2, 3]);
      expectChannels(out.data, vaeEncoderReference(vae, images, dims, epsOf(ids)), 'x0');
      // the clamp matters: channel 0's spread is e^10-sized, channel 1 is the mean up to e^−15
      expect(Math.max(...Array.from(out.data.subarray(0, 6), Math.abs))).toBeGreaterThan(100);
      // an item depends only on its image and its key, not on the batch
      const alone = await enc.encode({ data: images.slice(72, 144), dims: [1, 3, 4, 6] }, { rngs: keyed(['b']) });
      expect(Array.from(alone.data)).toEqual(Array.from(out.data.subarray(per, 2 * per)));
      // another key, another sample
      const other = await enc.encode({ data: images, dims }, { rngs: keyed(['x', 'y', 'z']) });
      expect(Array.from(other.data)).not.toEqual(Array.from(out.data));
      await expect(enc.encode({ data: images, dims })).rejects.toThrow(/rngs/);
      await expect(enc.encode({ data: images, dims }, { rngs: keyed(['a']) })).rejects.toThrow(InputError);
      await expect(enc.encode({ data: new Float32Array(3 * 3 * 5 * 6), dims: [1, 3, 5, 6] }, { rngs: keyed(['a']) })).rejects.toThrow(ShapeError);
    } finally {
      await enc.dispose();
      await enc.dispose();
    }
  });

  it("posterior 'mean' takes the mean (no noise needed); shift_factor is subtracted before scaling", async () => {
    const { vae, enc } = await load('latent_parameters', { posterior: 'mean', shiftFactor: 0.25 });
    try {
      expect(enc.needsNoise).toBe(false);
      const out = await enc.encode({ data: images, dims });
      expectChannels(out.data, vaeEncoderReference(vae, images, dims, null), 'x0 (mean)');
    } finally {
      await enc.dispose();
    }
  });

  it('mean + logvar outputs give the same numbers as latent_parameters', async () => {
    const { vae, enc } = await load('mean_logvar');
    try {
      const ids = ['p', 'q', 'r'];
      const out = await enc.encode({ data: images, dims }, { rngs: keyed(ids) });
      expectChannels(out.data, vaeEncoderReference(vae, images, dims, epsOf(ids)), 'x0 (mean, logvar)');
    } finally {
      await enc.dispose();
    }
  });

  it("latent_sample is taken as the graph gives it (scaled); 'mean' is refused for it, naming the output", async () => {
    const { dir, vae, enc } = await load('latent_sample');
    try {
      expect(enc.needsNoise).toBe(false);
      const out = await enc.encode({ data: images, dims });
      expectChannels(out.data, vaeEncoderReference(vae, images, dims, null), 'x0 (latent_sample)');
    } finally {
      await enc.dispose();
    }
    await expect(OrtVaeEncoder.load(dir, { posterior: 'mean' })).rejects.toThrow(ConfigError);
    await expect(OrtVaeEncoder.load(dir, { posterior: 'mean' })).rejects.toThrow(/latent_sample/);
  });

  it('errors name the file and the output: missing model, foreign graph, config/graph mismatch', async () => {
    const dir = path.join(tempDir(), 'vae_encoder');
    await expect(OrtVaeEncoder.load(dir)).rejects.toThrow(/vae_encoder\/model\.onnx/);
    // a decoder graph is not an encoder
    writeVaeDecoder(dir);
    await expect(OrtVaeEncoder.load(dir)).rejects.toThrow(/outputs sample/);
    // config says 3 latent channels, the graph returns 2·4: ShapeError naming latent_parameters
    writeVaeEncoder(dir);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ scaling_factor: 0.5, latent_channels: 3, block_out_channels: [4, 8] }));
    const enc = await OrtVaeEncoder.load(dir, { posterior: 'mean' });
    try {
      await expect(enc.encode({ data: images, dims })).rejects.toThrow(ShapeError);
      await expect(enc.encode({ data: images, dims })).rejects.toThrow(/model\.onnx: latent_parameters/);
    } finally {
      await enc.dispose();
    }
    // SD 2.1 defaults without config.json: f = 8 from block_out_channels, so a 4×6 image does not fit
    fs.rmSync(path.join(dir, 'config.json'));
    const sd = await OrtVaeEncoder.load(dir, { posterior: 'mean' });
    try {
      expect(sd.scaleFactor).toBe(8);
      expect(sd.config.scaling_factor).toBeCloseTo(0.18215, 10);
      await expect(sd.encode({ data: images, dims })).rejects.toThrow(/multiples of 8/);
    } finally {
      await sd.dispose();
    }
  });
});

describe('PixelEncoder', () => {
  it('returns a bit-identical copy', async () => {
    const data = Rng.forKey(3, 'px').normal(2 * 3 * 2 * 2);
    const out = await new PixelEncoder().encode({ data, dims: [2, 3, 2, 2] });
    expect(out.data).not.toBe(data);
    expect(Buffer.from(out.data.buffer).equals(Buffer.from(data.buffer))).toBe(true);
    expect(out.dims).toEqual([2, 3, 2, 2]);
  });
});
