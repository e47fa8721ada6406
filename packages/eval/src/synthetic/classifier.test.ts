import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, InputError, Rng, ShapeError, readSafetensors, writeSafetensors, type HostTensor } from '@aptp/core';
import { describeBackends, expectClose, expectNoTensorLeak, useTempDirs } from '@aptp/core/testing';
import { SyntheticWorld, type RgbImage, type SyntheticSample } from '@aptp/datasets';
import {
  HEAD_NAMES,
  SyntheticAttributeClassifier,
  attributeTargets,
  classifierLoss,
  classifierWeightShapes,
  encodeTargets,
  imagesToTensor,
  syntheticHeadClasses,
  type ClassifierConfigInput,
} from './classifier';

const TINY: ClassifierConfigInput = { imageSize: 16, convs: [{ channels: 3, stride: 2 }, { channels: 4, stride: 1 }, { channels: 4, stride: 2 }], featureDim: 5 };

const tempDir = useTempDirs('aptp-evaluator-');

const world = new SyntheticWorld({ seed: 5 });
const samples: SyntheticSample[] = Array.from({ length: 200 }, (_, i) => world.sample('train', i));
/** Samples drawn at the tiny model's input size (no resize between the tfjs and the reference forward). */
const small: SyntheticSample[] = Array.from({ length: 40 }, (_, i) => new SyntheticWorld({ seed: 5, imageSize: 16 }).sample('train', i));

function randomImages(n: number, size: number, seed: number): RgbImage[] {
  let s = seed;
  const next = (): number => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 16) & 255;
  return Array.from({ length: n }, () => ({ width: size, height: size, data: Uint8Array.from({ length: size * size * 3 }, next) }));
}

/**
 * Independent float64 forward from the public (PyTorch-layout) weights: conv3x3 pad 1 (NCHW) → ReLU → flatten C·H·W →
 * linear → ReLU → heads.
 */
function referenceForward(w: Map<string, { shape: number[]; data: ArrayLike<number> }>, cfg: { convs: { channels: number; stride: number }[] }, img: RgbImage): { features: number[]; logits: Record<string, number[]> } {
  let C = 3;
  let H = img.height;
  let x: number[] = new Array(C * H * H);
  for (let c = 0; c < 3; c++) for (let i = 0; i < H; i++) for (let j = 0; j < H; j++) x[(c * H + i) * H + j] = img.data[(i * H + j) * 3 + c]! / 127.5 - 1;
  cfg.convs.forEach((conv, l) => {
    const W = w.get(`convs.${l}.weight`)!.data;
    const B = w.get(`convs.${l}.bias`)!.data;
    const O = conv.channels;
    const s = conv.stride;
    const OH = Math.floor((H + 2 - 3) / s) + 1;
    const y: number[] = new Array(O * OH * OH).fill(0);
    for (let o = 0; o < O; o++)
      for (let i = 0; i < OH; i++)
        for (let j = 0; j < OH; j++) {
          let acc = B[o]!;
          for (let c = 0; c < C; c++)
            for (let a = 0; a < 3; a++)
              for (let b = 0; b < 3; b++) {
                const yi = i * s + a - 1;
                const xj = j * s + b - 1;
                if (yi < 0 || yi >= H || xj < 0 || xj >= H) continue;
                acc += W[((o * C + c) * 3 + a) * 3 + b]! * x[(c * H + yi) * H + xj]!;
              }
          y[(o * OH + i) * OH + j] = Math.max(0, acc);
        }
    x = y;
    C = O;
    H = OH;
  });
  const linear = (key: string, v: number[], relu: boolean): number[] => {
    const t = w.get(`${key}.weight`)!;
    const [out, inn] = t.shape as [number, number];
    const b = w.get(`${key}.bias`)!.data;
    return Array.from({ length: out }, (_, k) => {
      let acc = b[k]!;
      for (let n = 0; n < inn; n++) acc += t.data[k * inn + n]! * v[n]!;
      return relu ? Math.max(0, acc) : acc;
    });
  };
  let features = linear('feature', x, false);
  const pool = w.get('feature_pool.weight');
  if (pool) {
    // global max over positions of each channel of the last map, then [F, C] without bias
    const side = H * H;
    const pooled = Array.from({ length: C }, (_, c) => Math.max(...x.slice(c * side, (c + 1) * side)));
    features = features.map((f, k) => f + pooled.reduce((a, v, c) => a + pool.data[k * C + c]! * v, 0));
  }
  features = features.map((f) => Math.max(0, f));
  const logits: Record<string, number[]> = {};
  for (const h of HEAD_NAMES) logits[h] = linear(`heads.${h}`, features, false);
  return { features, logits };
}

describe('synthetic classifier: targets', () => {
  it('maps ground truth to the heads of each category; relations are ordered left/upper first', () => {
    const byCat = (c: string) => samples.filter((s) => s.attributes.category === c);
    for (const s of byCat('relation')) {
      const t = attributeTargets(s.attributes);
      const [a, b] = s.attributes.objects;
      // The "first" object is the one to the left (horizontal) or above (vertical), read from the drawn centers.
      const firstIsA = t.relationAxis === 'horizontal' ? a!.center[0] < b!.center[0] : a!.center[1] < b!.center[1];
      const [first, second] = firstIsA ? [a!, b!] : [b!, a!];
      expect([t.shape, t.color, t.secondShape, t.secondColor]).toEqual([first.kind, first.color, second.kind, second.color]);
      expect(t.size).toBeUndefined();
    }
    for (const s of byCat('text')) {
      const t = attributeTargets(s.attributes);
      expect(t.glyph! + (t.secondGlyph === 'none' ? '' : t.secondGlyph)).toBe(s.attributes.text);
      expect(t.shape).toBeUndefined();
    }
    for (const s of byCat('count')) expect(Number(attributeTargets(s.attributes).count)).toBe(s.attributes.objects.length);
    const shape = byCat('shape')[0]!.attributes;
    expect(attributeTargets(shape)).toEqual({
      category: 'shape',
      shape: shape.objects[0]!.kind,
      color: shape.objects[0]!.color,
      size: shape.objects[0]!.size,
      position: shape.objects[0]!.position,
      backgroundPattern: shape.background.pattern,
      backgroundColor: shape.background.color,
    });
  });

  it('encodes labels as class indices, −1 where a head does not apply', () => {
    const heads = syntheticHeadClasses();
    const t = encodeTargets(samples.map((s) => s.attributes));
    samples.forEach((s, i) => {
      const truth = attributeTargets(s.attributes);
      for (const h of HEAD_NAMES) expect(t[h][i]).toBe(truth[h] === undefined ? -1 : heads[h].indexOf(truth[h]!));
    });
    // Every head is trained by some category in 200 samples.
    for (const h of HEAD_NAMES) expect(t[h].some((v) => v >= 0)).toBe(true);
  });
});

describe('synthetic classifier: inputs', () => {
  it('turns RGB bytes into NHWC [-1, 1], from images or NCHW tensors, resizing other sizes', () => {
    const imgs = randomImages(2, 4, 1);
    const x = imagesToTensor(imgs, 4);
    expect(x.shape).toEqual([2, 4, 4, 3]);
    expectClose(x, Array.from(imgs.flatMap((im) => Array.from(im.data, (v) => v / 127.5 - 1))), { name: 'pixels', atol: 1e-6 });
    const nchw = tf.transpose(x, [0, 3, 1, 2]) as tf.Tensor4D;
    expectClose(imagesToTensor(nchw, 4), x, { name: 'nchw', atol: 0 });
    const flat: RgbImage = { width: 16, height: 16, data: new Uint8Array(16 * 16 * 3).fill(51) };
    expectClose(imagesToTensor([flat], 8), new Array(8 * 8 * 3).fill(51 / 127.5 - 1), { name: 'resized', atol: 1e-6 });
    expect(() => imagesToTensor([imgs[0]!, flat], 4)).toThrow(ShapeError);
    expect(() => imagesToTensor(tf.zeros([1, 4, 4, 3]) as tf.Tensor4D, 4)).toThrow(/\[B, 3, H, W\]/);
    tf.dispose([x, nchw]);
  });
});

describeBackends('synthetic classifier: forward, save/load, loss, gradients', () => {
  let dir: string;
  beforeAll(() => {
    dir = tempDir();
    const m = SyntheticAttributeClassifier.init(TINY, { seed: 3 });
    m.save(dir);
    m.dispose();
  });

  it('stores PyTorch-layout weights and reproduces an independent float64 forward', async () => {
    const weights = new Map([...readSafetensors(path.join(dir, 'model.safetensors'))].map(([k, t]) => [k, { shape: t.shape, data: t.data as Float32Array }]));
    const m = SyntheticAttributeClassifier.load(dir);
    expect([...weights.keys()].sort()).toEqual(Object.keys(classifierWeightShapes(m.config)).sort());
    expect(weights.get('convs.0.weight')!.shape).toEqual([3, 3, 3, 3]);
    expect(weights.get('feature.weight')!.shape).toEqual([5, 4 * 4 * 4]);
    const imgs = randomImages(3, 16, 7);
    const { predictions, features } = await m.predict(imgs, { batchSize: 2 });
    expect(features.dim).toBe(5);
    imgs.forEach((img, r) => {
      const ref = referenceForward(weights, m.config, img);
      expectClose(features.data.subarray(r * 5, r * 5 + 5), ref.features, { name: `features[${r}]`, atol: 1e-4 });
      const x = imagesToTensor([img], 16);
      const out = m.forward(x);
      for (const h of HEAD_NAMES) {
        expectClose(out.logits[h], ref.logits[h]!, { name: `logits.${h}[${r}]`, atol: 1e-4 });
        const best = ref.logits[h]!.indexOf(Math.max(...ref.logits[h]!));
        expect(predictions[r]!.labels[h]).toBe(m.config.heads[h]![best]);
        expect(predictions[r]!.confidence[h]).toBeGreaterThan(1 / m.config.heads[h]!.length - 1e-6);
      }
      tf.dispose([x, out.features, ...Object.values(out.logits)]);
    });
    m.dispose();
  });

  it('round-trips save → load exactly and is deterministic per seed', async () => {
    const a = SyntheticAttributeClassifier.init(TINY, { seed: 3 });
    const b = SyntheticAttributeClassifier.load(dir);
    const c = SyntheticAttributeClassifier.init(TINY, { seed: 4 });
    const imgs = samples.slice(0, 4).map((s) => s.image);
    const [fa, fb, fc] = [await a.features(imgs), await b.features(imgs), await c.features(imgs)];
    expectClose(fb.data, fa.data, { name: 'loaded', atol: 0 });
    expect(Math.max(...fa.data.map((v, i) => Math.abs(v - fc.data[i]!)))).toBeGreaterThan(1e-3);
    [a, b, c].forEach((m) => m.dispose());
  });

  it('loss is the sum over heads of the mean cross-entropy over the samples each head applies to', () => {
    const m = SyntheticAttributeClassifier.load(dir);
    const batch = samples.slice(0, 12);
    const targets = encodeTargets(batch.map((s) => s.attributes));
    const x = imagesToTensor(batch.map((s) => s.image), 16);
    const loss = classifierLoss(m, x, targets);
    const out = m.forward(x);
    let expected = 0;
    for (const h of HEAD_NAMES) {
      const z = out.logits[h].arraySync();
      let sum = 0;
      let n = 0;
      z.forEach((row, i) => {
        const t = targets[h][i]!;
        if (t < 0) return;
        const mx = Math.max(...row);
        const lse = mx + Math.log(row.reduce((s, v) => s + Math.exp(v - mx), 0));
        sum += lse - row[t]!;
        n += 1;
      });
      if (n > 0) expected += sum / n;
    }
    expectClose(loss, [expected], { name: 'loss', rtol: 1e-5 });
    tf.dispose([x, loss, out.features, ...Object.values(out.logits)]);
    m.dispose();
  });

  it('weight gradients (wasm-safe eager kernels) match float64 finite differences of the independent forward', () => {
    const m = SyntheticAttributeClassifier.init(TINY, { seed: 11, trainable: true });
    // Two samples of each category, so that every head has a gradient.
    const batch = ['shape', 'count', 'relation', 'text'].flatMap((c) => small.filter((s) => s.attributes.category === c).slice(0, 2));
    const targets = encodeTargets(batch.map((s) => s.attributes));
    const x = imagesToTensor(batch.map((s) => s.image), 16);
    const params = m.trainableWeights();
    // Zero-initialised biases put dead units exactly on the ReLU kink (pre-activation 0); probe a generic point.
    Object.entries(params).forEach(([k, v], j) => {
      if (k.endsWith('.bias')) v.assign(tf.tensor(Rng.forKey(j, 'bias').normal(v.size, 0, 0.1), v.shape));
    });
    const { value, grads } = tf.variableGrads(() => classifierLoss(m, x, targets), Object.values(params));
    const gradOf = Object.fromEntries(Object.entries(params).map(([k, v]) => [k, grads[v.name]!.dataSync()]));
    const d = tempDir();
    m.save(d);
    const pub = new Map([...readSafetensors(path.join(d, 'model.safetensors'))].map(([k, t]) => [k, { shape: t.shape, data: Float64Array.from(t.data as Float32Array) }]));
    const refLoss = (): number => {
      const outs = batch.map((s) => referenceForward(pub, m.config, s.image));
      let total = 0;
      for (const h of HEAD_NAMES) {
        let sum = 0;
        let n = 0;
        outs.forEach((o, i) => {
          const t = targets[h][i]!;
          if (t < 0) return;
          const z = o.logits[h]!;
          const mx = Math.max(...z);
          sum += mx + Math.log(z.reduce((a, v) => a + Math.exp(v - mx), 0)) - z[t]!;
          n += 1;
        });
        if (n > 0) total += sum / n;
      }
      return total;
    };
    expectClose(value, [refLoss()], { name: 'loss vs float64 reference', rtol: 1e-5 });
    // Public index → eager index: conv [O,I,3,3] ↔ [3,3,I,O]; feature [F, C·s·s] ↔ [s·s·C, F]; heads [k,F] ↔ [F,k].
    const eagerIndex = (key: string, shape: number[], i: number): number => {
      if (key.endsWith('.bias')) return i;
      if (key.startsWith('convs.')) {
        const [O, I] = shape as [number, number];
        const [o, c, a, b] = [Math.floor(i / (I * 9)), Math.floor(i / 9) % I, Math.floor(i / 3) % 3, i % 3];
        return ((a * 3 + b) * I + c) * O + o;
      }
      const [out, inn] = shape as [number, number];
      const [k, n] = [Math.floor(i / inn), i % inn];
      if (key === 'feature.weight') {
        const C = 4;
        const side = 4;
        const [c, y, xx] = [Math.floor(n / (side * side)), Math.floor(n / side) % side, n % side];
        return ((y * side + xx) * C + c) * out + k;
      }
      return n * out + k;
    };
    const h = 1e-6;
    let checked = 0;
    for (const key of ['convs.0.weight', 'convs.1.weight', 'convs.2.weight', 'convs.2.bias', 'feature.weight', 'feature_pool.weight', 'heads.glyph.weight', 'heads.category.bias']) {
      const t = pub.get(key)!;
      for (let p = 0; p < 5; p++) {
        const i = Math.floor(((p + 0.5) * t.data.length) / 5);
        const v0 = t.data[i]!;
        t.data[i] = v0 + h;
        const up = refLoss();
        t.data[i] = v0 - h;
        const down = refLoss();
        t.data[i] = v0;
        const fd = (up - down) / (2 * h);
        const an = gradOf[key]![eagerIndex(key, t.shape, i)]!;
        expect({ key, i, diff: Math.abs(fd - an) <= 1e-4 + 1e-3 * Math.abs(fd) ? 'ok' : `fd ${fd} vs autodiff ${an}` }).toEqual({ key, i, diff: 'ok' });
        checked += 1;
      }
    }
    expect(checked).toBe(40);
    tf.dispose([x, value, ...Object.values(grads)]);
    m.dispose();
  });

  it('leaks no tensors across training steps and predictions', async () => {
    const m = SyntheticAttributeClassifier.init(TINY, { seed: 1, trainable: true });
    const params = m.trainableWeights();
    const batch = samples.slice(0, 8);
    const targets = encodeTargets(batch.map((s) => s.attributes));
    await expectNoTensorLeak(
      async () => {
        const x = imagesToTensor(batch.map((s) => s.image), 16);
        const { value, grads } = tf.variableGrads(() => classifierLoss(m, x, targets), Object.values(params));
        tf.tidy(() => {
          for (const v of Object.values(params)) if (grads[v.name]) v.assign(tf.sub(v, tf.mul(grads[v.name]!, 1e-3)));
        });
        tf.dispose([x, value, ...Object.values(grads)]);
        await m.predict(batch.map((s) => s.image), { batchSize: 3 });
      },
      { name: 'classifier step + predict' },
    );
    m.dispose();
    m.dispose(); // idempotent
    await expect(m.predict(batch.map((s) => s.image))).rejects.toThrow(/after dispose/);
  });
});

describe('synthetic classifier: loading errors', () => {
  const good = tempDir();
  beforeAll(() => {
    const m = SyntheticAttributeClassifier.init(TINY, { seed: 2 });
    m.save(good);
    m.dispose();
  });
  const copy = (): string => {
    const d = tempDir();
    for (const f of fs.readdirSync(good)) fs.copyFileSync(path.join(good, f), path.join(d, f));
    return d;
  };

  it('names the missing file and how to make it', () => {
    const d = tempDir();
    expect(() => SyntheticAttributeClassifier.load(d)).toThrow(InputError);
    expect(() => SyntheticAttributeClassifier.load(d)).toThrow(new RegExp(`${path.join(d, 'config.json')}: evaluator config not found; train one with \`aptp-trainer evaluator`));
    const noWeights = copy();
    fs.rmSync(path.join(noWeights, 'model.safetensors'));
    expect(() => SyntheticAttributeClassifier.load(noWeights)).toThrow(/model\.safetensors: evaluator weights not found/);
  });

  it('rejects bad config fields, foreign vocabularies, missing / extra tensors and wrong shapes', () => {
    const cfgFile = (d: string) => path.join(d, 'config.json');
    const edit = (f: (c: Record<string, unknown>) => void): string => {
      const d = copy();
      const c = JSON.parse(fs.readFileSync(cfgFile(d), 'utf8')) as Record<string, unknown>;
      f(c);
      fs.writeFileSync(cfgFile(d), JSON.stringify(c));
      return d;
    };
    expect(() => SyntheticAttributeClassifier.load(edit((c) => (c.featureDims = 3)))).toThrow(/config\.json: featureDims/);
    expect(() => SyntheticAttributeClassifier.load(edit((c) => (c.imageSize = 10)))).toThrow(/imageSize: imageSize must stay a whole number/);
    const vocab = edit((c) => ((c.heads as Record<string, string[]>).color = ['red', 'green']));
    expect(() => SyntheticAttributeClassifier.load(vocab)).toThrow(ConfigError);
    expect(() => SyntheticAttributeClassifier.load(vocab)).toThrow(/heads\.color: head classes differ from the synthetic world vocabulary; retrain with `aptp-trainer evaluator`: expected \["red","green","blue"/);
    const notJson = copy();
    fs.writeFileSync(cfgFile(notJson), '{oops');
    expect(() => SyntheticAttributeClassifier.load(notJson)).toThrow(/config\.json: evaluator config is not valid JSON/);

    const weightsOf = (d: string) => path.join(d, 'model.safetensors');
    const tensors = Object.fromEntries(readSafetensors(weightsOf(good)));
    const withTensors = (t: Record<string, HostTensor>): string => {
      const d = copy();
      writeSafetensors(weightsOf(d), t);
      return d;
    };
    const { ['heads.glyph.bias']: _dropped, ...missing } = tensors;
    expect(() => SyntheticAttributeClassifier.load(withTensors(missing))).toThrow(/model\.safetensors: heads\.glyph\.bias: missing tensor: expected \[36\]/);
    const extra = { ...tensors, 'convs.9.weight': tensors['convs.0.weight']! };
    expect(() => SyntheticAttributeClassifier.load(withTensors(extra))).toThrow(/convs\.9\.weight: unexpected tensor/);
    const w = tensors['convs.1.weight']!;
    const wrong = { ...tensors, 'convs.1.weight': { ...w, shape: [3, 4, 3, 3] } };
    expect(() => SyntheticAttributeClassifier.load(withTensors(wrong))).toThrow(/convs\.1\.weight: wrong shape: expected \[4,3,3,3\], found \[3,4,3,3\]/);
  });
});
