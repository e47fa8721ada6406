import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import {
  ConfigError,
  InputError,
  Rng,
  SafetensorsReader,
  ShapeError,
  conv2dNhwc,
  linearLastAxis,
  registerEagerGradients,
  toTfTensor,
  writeJsonAtomic,
  writeSafetensors,
} from '@aptp/core';
import {
  BACKGROUND_PATTERNS,
  CATEGORIES,
  COLOR_NAMES,
  GLYPH_CHARS,
  POSITIONS,
  SHAPES,
  SIZES,
  type RgbImage,
  type SceneObject,
  type SyntheticAttributes,
} from '@aptp/datasets';
import { cmmd, l2NormalizeRows, type CmmdOptions } from '../metrics/cmmd';
import { frechetDistance, gaussianStats, type FeatureMatrix, type LinalgOptions } from '../metrics/frechet';

// The eager convolution / matmul kernels carry their own gradients; the elementwise ones come from this table.
registerEagerGradients();

/**
 * A small CNN that reads the synthetic world's ground-truth attributes back from 32×32 images (APTP.md §8 analogue
 * for the built-in world: no downloaded weights needed). It gives
 * (a) penultimate-layer features for FID/CMMD-style distances between generated and reference images, and
 * (b) per-attribute predictions for prompt adherence (`adherence.ts`).
 *
 * Architecture (config.json `convs`): 3×3 convolutions (pad 1, ReLU; stride 2 halves the map) → flatten (+ the
 * global max over positions of the last map, `globalPool`) → linear `featureDim` + ReLU (= the features) → one linear
 * head per attribute. Weights are stored in PyTorch layout
 * (conv `[O, I, 3, 3]`, linear `[out, in]`, flatten in C·H·W order) and converted once at load to the eager layout
 * (NHWC, conv `[3, 3, I, O]`, linear `[in, out]`).
 */

export const CLASSIFIER_ARCHITECTURE = 'SyntheticAttributeClassifier';
export const CLASSIFIER_CONFIG_FILE = 'config.json';
export const CLASSIFIER_WEIGHTS_FILE = 'model.safetensors';

/** Object counts of `count` prompts (the world draws 2–5 copies). */
const COUNTS = ['2', '3', '4', '5'] as const;
/** Second character of `text` prompts; `none` for one-character texts. */
const NO_GLYPH = 'none';

/**
 * The classifier's heads and their classes, from the world's vocabulary. Relations are canonicalised so that they
 * can be read from pixels alone: `relationAxis` is horizontal (left of / right of) or vertical (above / below),
 * `shape`/`color` describe the left (horizontal) or upper (vertical) object and `secondShape`/`secondColor` the other.
 */
export function syntheticHeadClasses(): Record<HeadName, readonly string[]> {
  const glyphs = GLYPH_CHARS.split('');
  return {
    category: CATEGORIES,
    shape: SHAPES,
    color: COLOR_NAMES,
    size: SIZES,
    position: POSITIONS,
    count: COUNTS,
    relationAxis: ['horizontal', 'vertical'],
    secondShape: SHAPES,
    secondColor: COLOR_NAMES,
    glyph: glyphs,
    secondGlyph: [NO_GLYPH, ...glyphs],
    backgroundPattern: BACKGROUND_PATTERNS,
    backgroundColor: COLOR_NAMES,
  };
}

export const HEAD_NAMES = [
  'category',
  'shape',
  'color',
  'size',
  'position',
  'count',
  'relationAxis',
  'secondShape',
  'secondColor',
  'glyph',
  'secondGlyph',
  'backgroundPattern',
  'backgroundColor',
] as const;
export type HeadName = (typeof HEAD_NAMES)[number];

/**
 * The ground-truth label of every head that applies to a sample (heads of other categories are absent):
 * all: category, backgroundPattern, backgroundColor; shape: shape, color, size, position; count: count, shape, color;
 * relation: relationAxis, shape/color (left or upper object), secondShape/secondColor; text: glyph, secondGlyph, color.
 */
export function attributeTargets(a: SyntheticAttributes): Partial<Record<HeadName, string>> {
  const t: Partial<Record<HeadName, string>> = { category: a.category, backgroundPattern: a.background.pattern, backgroundColor: a.background.color };
  const first = a.objects[0];
  if (!first) throw new InputError('synthetic sample has no objects', { field: 'attributes.objects', found: a.objects.length });
  switch (a.category) {
    case 'shape':
      Object.assign(t, { shape: first.kind, color: first.color, size: first.size, position: first.position });
      break;
    case 'count':
      Object.assign(t, { count: String(a.count ?? a.objects.length), shape: first.kind, color: first.color });
      break;
    case 'relation': {
      const [lead, other] = relationOrder(a);
      const horizontal = a.relation === 'left of' || a.relation === 'right of';
      Object.assign(t, { relationAxis: horizontal ? 'horizontal' : 'vertical', shape: lead.kind, color: lead.color, secondShape: other.kind, secondColor: other.color });
      break;
    }
    case 'text': {
      const text = a.text ?? a.objects.map((o) => o.glyph ?? '').join('');
      Object.assign(t, { glyph: text[0], secondGlyph: text.length > 1 ? text[1] : NO_GLYPH, color: first.color });
      break;
    }
  }
  return t;
}

/** Relation objects as (left or upper, right or lower): `objects[0] <relation> objects[1]`. */
function relationOrder(a: SyntheticAttributes): [SceneObject, SceneObject] {
  const [o0, o1] = a.objects as [SceneObject, SceneObject | undefined];
  if (!o1 || !a.relation) throw new InputError('relation sample needs two objects and a relation', { field: 'attributes.relation', found: a.relation ?? null });
  return a.relation === 'left of' || a.relation === 'above' ? [o0, o1] : [o1, o0];
}

// ---- config ----------------------------------------------------------------------------------------------------

const convSchema = z.strictObject({
  channels: z.number().int().positive().describe('output channels of this 3×3 convolution'),
  stride: z.union([z.literal(1), z.literal(2)]).describe('1 keeps the map size, 2 halves it'),
});

export const classifierConfigSchema = z.strictObject({
  architecture: z.literal(CLASSIFIER_ARCHITECTURE).describe('model class stored in config.json'),
  imageSize: z.number().int().min(8).default(32).describe('input side in pixels; other sizes are resized (bilinear)'),
  convs: z
    .array(convSchema)
    .min(1)
    .default([
      { channels: 16, stride: 1 },
      { channels: 32, stride: 2 },
      { channels: 32, stride: 1 },
      { channels: 64, stride: 2 },
      { channels: 64, stride: 2 },
    ])
    .describe('the 3×3 convolutions (pad 1, ReLU), input to output'),
  featureDim: z.number().int().positive().default(256).describe('width of the penultimate layer (the FID/CMMD features)'),
  globalPool: z
    .boolean()
    .default(true)
    .describe('also feed a global max-pool of the last convolution to the feature layer (`feature_pool.weight`): position-free shape evidence'),
  heads: z
    .record(z.string(), z.array(z.string()).min(2))
    .default(() => Object.fromEntries(Object.entries(syntheticHeadClasses()).map(([k, v]) => [k, [...v]])))
    .describe('class labels of each head; must match the synthetic world vocabulary'),
});
export type ClassifierConfig = z.output<typeof classifierConfigSchema>;
export type ClassifierConfigInput = Partial<z.input<typeof classifierConfigSchema>>;

function parseConfig(json: unknown, file?: string): ClassifierConfig {
  const r = classifierConfigSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const field = issue.path.length > 0 ? issue.path.join('.') : issue.code === 'unrecognized_keys' ? (issue as { keys: string[] }).keys.join(', ') : '';
    throw new ConfigError(issue.message, { code: 'E_CONFIG_FIELD', file, field });
  }
  const cfg = r.data;
  const side = finalSide(cfg);
  if (!Number.isInteger(side) || side < 1) {
    throw new ConfigError('imageSize must stay a whole number through the stride-2 convolutions', { file, field: 'imageSize', found: cfg.imageSize });
  }
  const expected = syntheticHeadClasses();
  for (const name of HEAD_NAMES) {
    const found = cfg.heads[name];
    if (!found || found.join('|') !== expected[name].join('|')) {
      throw new ConfigError('head classes differ from the synthetic world vocabulary; retrain with `aptp-trainer evaluator`', {
        code: 'E_EVALUATOR_VOCAB',
        file,
        field: `heads.${name}`,
        expected: expected[name],
        found: found ?? null,
      });
    }
  }
  const extra = Object.keys(cfg.heads).filter((k) => !(HEAD_NAMES as readonly string[]).includes(k));
  if (extra.length > 0) throw new ConfigError('unknown head', { file, field: `heads.${extra[0]}`, expected: HEAD_NAMES });
  return cfg;
}

function finalSide(cfg: ClassifierConfig): number {
  return cfg.convs.reduce((s, c) => (c.stride === 2 ? s / 2 : s), cfg.imageSize);
}

function featureFanIn(cfg: ClassifierConfig): number {
  const c = cfg.convs[cfg.convs.length - 1]!.channels;
  const side = finalSide(cfg);
  return c * side * side + (cfg.globalPool ? c : 0);
}

/** Public (PyTorch-layout) weight shapes by key. */
export function classifierWeightShapes(cfg: ClassifierConfig): Record<string, number[]> {
  const shapes: Record<string, number[]> = {};
  let inCh = 3;
  cfg.convs.forEach((c, i) => {
    shapes[`convs.${i}.weight`] = [c.channels, inCh, 3, 3];
    shapes[`convs.${i}.bias`] = [c.channels];
    inCh = c.channels;
  });
  const side = finalSide(cfg);
  shapes['feature.weight'] = [cfg.featureDim, inCh * side * side];
  shapes['feature.bias'] = [cfg.featureDim];
  if (cfg.globalPool) shapes['feature_pool.weight'] = [cfg.featureDim, inCh];
  for (const h of HEAD_NAMES) {
    shapes[`heads.${h}.weight`] = [cfg.heads[h]!.length, cfg.featureDim];
    shapes[`heads.${h}.bias`] = [cfg.heads[h]!.length];
  }
  return shapes;
}

// ---- inputs ----------------------------------------------------------------------------------------------------

/**
 * What the classifier reads: 8-bit RGB images (`@aptp/datasets` `RgbImage`, row-major HWC), or a float tensor
 * `[B, 3, H, W]` (NCHW, diffusers' decoded-image layout) in [−1, 1].
 */
export type ClassifierInput = readonly RgbImage[] | tf.Tensor4D;

/** Images → NHWC float32 `[B, size, size, 3]` in [−1, 1] (bilinear resize when the side differs). Caller owns it. */
export function imagesToTensor(input: ClassifierInput, size: number): tf.Tensor4D {
  return tf.tidy(() => {
    let x: tf.Tensor4D;
    if (input instanceof tf.Tensor) {
      if (input.rank !== 4 || input.shape[1] !== 3) throw new ShapeError('image tensor must be [B, 3, H, W] in [-1, 1]', { field: 'images', found: input.shape });
      x = tf.transpose(input, [0, 2, 3, 1]);
    } else {
      if (input.length === 0) throw new InputError('no images', { field: 'images', found: 0 });
      const { width, height } = input[0]!;
      const data = new Float32Array(input.length * width * height * 3);
      input.forEach((img, i) => {
        if (img.width !== width || img.height !== height || img.data.length !== width * height * 3) {
          throw new ShapeError('all images must share one size and be RGB', { field: `images[${i}]`, expected: `${width}x${height}x3`, found: `${img.width}x${img.height} (${img.data.length} bytes)` });
        }
        const o = i * width * height * 3;
        for (let k = 0; k < img.data.length; k++) data[o + k] = img.data[k]! / 127.5 - 1;
      });
      x = tf.tensor4d(data, [input.length, height, width, 3]);
    }
    if (x.shape[1] !== size || x.shape[2] !== size) x = tf.image.resizeBilinear(x, [size, size], false, true);
    return x;
  });
}

function batchCount(input: ClassifierInput): number {
  return input instanceof tf.Tensor ? input.shape[0] : input.length;
}

function batchSlice(input: ClassifierInput, start: number, end: number): ClassifierInput {
  return input instanceof tf.Tensor ? (tf.slice(input, [start, 0, 0, 0], [end - start, -1, -1, -1]) as tf.Tensor4D) : input.slice(start, end);
}

// ---- the model -------------------------------------------------------------------------------------------------

/** One image's predicted attributes: the label and its softmax probability per head. */
export interface AttributePrediction {
  labels: Record<HeadName, string>;
  confidence: Record<HeadName, number>;
}

export interface ClassifierOutput {
  predictions: AttributePrediction[];
  /** Penultimate-layer features `[rows, featureDim]` (after ReLU). */
  features: FeatureMatrix;
}

export interface ClassifierForward {
  /** [B, featureDim] */
  features: tf.Tensor2D;
  /** [B, classes(head)] per head */
  logits: Record<HeadName, tf.Tensor2D>;
}

export class SyntheticAttributeClassifier {
  readonly config: ClassifierConfig;
  /** Weights by public key, in eager layout (conv `[3,3,I,O]`, linear `[I,O]`); variables when trainable. */
  private readonly weights: Record<string, tf.Tensor>;
  private disposed = false;

  private constructor(config: ClassifierConfig, weights: Record<string, tf.Tensor>) {
    this.config = config;
    this.weights = weights;
  }

  /**
   * A freshly initialised classifier (He-normal weights from `Rng.forKey(seed, 'evaluator', key)`, zero biases).
   * `trainable` makes every weight a `tf.Variable` (see {@link trainableWeights}).
   */
  static init(config: ClassifierConfigInput = {}, options: { seed?: number; trainable?: boolean } = {}): SyntheticAttributeClassifier {
    const cfg = parseConfig({ architecture: CLASSIFIER_ARCHITECTURE, ...config });
    const seed = options.seed ?? 0;
    const weights: Record<string, tf.Tensor> = {};
    try {
      for (const [key, shape] of Object.entries(classifierWeightShapes(cfg))) {
        const n = shape.reduce((a, b) => a * b, 1);
        let data: Float32Array;
        if (key.endsWith('.bias')) data = new Float32Array(n);
        else {
          // The feature layer's two inputs (flattened map, pooled map) share one fan-in.
          const fanIn = key.startsWith('feature') ? featureFanIn(cfg) : shape.slice(1).reduce((a, b) => a * b, 1);
          const std = key.startsWith('heads.') ? Math.sqrt(1 / fanIn) : Math.sqrt(2 / fanIn);
          data = Rng.forKey(seed, 'evaluator', key).normal(n, 0, std);
        }
        const t = tf.tidy(() => toEager(key, tf.tensor(data, shape, 'float32'), cfg));
        weights[key] = options.trainable ? tf.variable(t, true) : t;
        if (options.trainable) t.dispose();
      }
    } catch (err) {
      tf.dispose(Object.values(weights));
      throw err;
    }
    return new SyntheticAttributeClassifier(cfg, weights);
  }

  /**
   * Loads `config.json` + `model.safetensors` from a folder written by {@link save} (e.g. the committed
   * `apps/trainer/assets/evaluator`). Missing files, unknown/missing tensors and wrong shapes are clear errors.
   */
  static load(dir: string): SyntheticAttributeClassifier {
    const configFile = path.join(dir, CLASSIFIER_CONFIG_FILE);
    const weightsFile = path.join(dir, CLASSIFIER_WEIGHTS_FILE);
    if (!fs.existsSync(configFile)) {
      throw new InputError('evaluator config not found; train one with `aptp-trainer evaluator --out <dir>`', { code: 'E_EVALUATOR_MISSING', file: configFile });
    }
    let json: unknown;
    try {
      json = JSON.parse(fs.readFileSync(configFile, 'utf8'));
    } catch (err) {
      throw new InputError('evaluator config is not valid JSON', { code: 'E_EVALUATOR_CONFIG', file: configFile, cause: err });
    }
    const cfg = parseConfig(json, configFile);
    if (!fs.existsSync(weightsFile)) {
      throw new InputError('evaluator weights not found; train them with `aptp-trainer evaluator --out <dir>`', { code: 'E_EVALUATOR_MISSING', file: weightsFile });
    }
    const shapes = classifierWeightShapes(cfg);
    const reader = new SafetensorsReader(weightsFile);
    const weights: Record<string, tf.Tensor> = {};
    try {
      const keys = new Set(reader.keys());
      for (const key of keys) {
        if (!(key in shapes)) throw new InputError('unexpected tensor', { code: 'E_EVALUATOR_WEIGHTS', file: weightsFile, field: key, expected: 'a key of config.json\'s architecture' });
      }
      for (const [key, shape] of Object.entries(shapes)) {
        if (!keys.has(key)) throw new InputError('missing tensor', { code: 'E_EVALUATOR_WEIGHTS', file: weightsFile, field: key, expected: shape });
        const host = reader.read(key);
        if (!tf.util.arraysEqual(host.shape, shape)) throw new ShapeError('wrong shape', { file: weightsFile, field: key, expected: shape, found: host.shape });
        weights[key] = tf.tidy(() => toEager(key, toTfTensor(host, key), cfg));
      }
    } catch (err) {
      tf.dispose(Object.values(weights));
      throw err;
    } finally {
      reader.close();
    }
    return new SyntheticAttributeClassifier(cfg, weights);
  }

  /** Writes `config.json` and `model.safetensors` (PyTorch layout, float32) into `dir` (atomic writes). */
  save(dir: string): void {
    this.live();
    fs.mkdirSync(dir, { recursive: true });
    const publicWeights: Record<string, tf.Tensor> = {};
    try {
      for (const [key, w] of Object.entries(this.weights)) publicWeights[key] = tf.tidy(() => toPublic(key, w, this.config));
      writeSafetensors(path.join(dir, CLASSIFIER_WEIGHTS_FILE), publicWeights, { metadata: { architecture: CLASSIFIER_ARCHITECTURE } });
    } finally {
      tf.dispose(Object.values(publicWeights));
    }
    writeJsonAtomic(path.join(dir, CLASSIFIER_CONFIG_FILE), this.config);
  }

  /** The trainable weights by public key (only for a classifier made with `init(..., { trainable: true })`). */
  trainableWeights(): Record<string, tf.Variable> {
    this.live();
    const out: Record<string, tf.Variable> = {};
    for (const [k, w] of Object.entries(this.weights)) if (w instanceof tf.Variable) out[k] = w;
    return out;
  }

  /** Number of weights (all tensors). */
  paramCount(): number {
    return Object.values(this.weights).reduce((s, w) => s + w.size, 0);
  }

  /**
   * The forward pass: x `[B, S, S, 3]` NHWC in [−1, 1] (see {@link imagesToTensor}). Differentiable with the
   * wasm-safe eager kernels; the caller owns the returned tensors (wrap in `tf.tidy`).
   */
  forward(x: tf.Tensor4D): ClassifierForward {
    this.live();
    const S = this.config.imageSize;
    if (x.rank !== 4 || x.shape[1] !== S || x.shape[2] !== S || x.shape[3] !== 3) {
      throw new ShapeError('classifier input must be NHWC [B, S, S, 3]', { field: 'x', expected: [-1, S, S, 3], found: x.shape });
    }
    const w = (k: string): tf.Tensor => this.weights[k]!;
    const grad = (k: string): boolean => this.weights[k] instanceof tf.Variable;
    let h: tf.Tensor4D = x;
    this.config.convs.forEach((c, i) => {
      const key = `convs.${i}.weight`;
      h = tf.relu(tf.add(conv2dNhwc(h, w(key) as tf.Tensor4D, c.stride, 1, grad(key)), w(`convs.${i}.bias`))) as tf.Tensor4D; // [B, s, s, C]
    });
    const flat = tf.reshape(h, [h.shape[0], -1]); // [B, s·s·C] (NHWC order; the weight was permuted at load)
    let pre = linearLastAxis(flat, w('feature.weight') as tf.Tensor2D, w('feature.bias'), grad('feature.weight')); // [B, F]
    if (this.config.globalPool) {
      const pooled = tf.max(h, [1, 2]); // [B, C]
      pre = tf.add(pre, linearLastAxis(pooled, w('feature_pool.weight') as tf.Tensor2D, null, grad('feature_pool.weight')));
    }
    const features = tf.relu(pre) as tf.Tensor2D; // [B, F]
    const logits = {} as Record<HeadName, tf.Tensor2D>;
    for (const head of HEAD_NAMES) {
      const key = `heads.${head}.weight`;
      logits[head] = linearLastAxis(features, w(key) as tf.Tensor2D, w(`heads.${head}.bias`), grad(key)) as tf.Tensor2D; // [B, k]
    }
    return { features, logits };
  }

  /** Predicted attributes and penultimate features of images, in chunks of `batchSize`. */
  async predict(input: ClassifierInput, options: { batchSize?: number } = {}): Promise<ClassifierOutput> {
    this.live();
    const n = batchCount(input);
    const bs = Math.max(1, options.batchSize ?? 256);
    const classes = this.config.heads;
    const F = this.config.featureDim;
    const features = new Float32Array(n * F);
    const predictions: AttributePrediction[] = [];
    for (let start = 0; start < n; start += bs) {
      const end = Math.min(n, start + bs);
      const outs = tf.tidy(() => {
        const part = batchSlice(input, start, end);
        const x = imagesToTensor(part, this.config.imageSize);
        const f = this.forward(x);
        const probs = HEAD_NAMES.map((h) => tf.softmax(f.logits[h]));
        return [f.features, ...probs];
      });
      try {
        const [feat, ...probs] = await Promise.all(outs.map((t) => t.data() as Promise<Float32Array>));
        features.set(feat!, start * F);
        for (let r = 0; r < end - start; r++) {
          const labels = {} as Record<HeadName, string>;
          const confidence = {} as Record<HeadName, number>;
          HEAD_NAMES.forEach((h, j) => {
            const k = classes[h]!.length;
            const p = probs[j]!;
            let best = 0;
            for (let c = 1; c < k; c++) if (p[r * k + c]! > p[r * k + best]!) best = c;
            labels[h] = classes[h]![best]!;
            confidence[h] = p[r * k + best]!;
          });
          predictions.push({ labels, confidence });
        }
      } finally {
        tf.dispose(outs);
      }
    }
    return { predictions, features: { data: features, rows: n, dim: F } };
  }

  /** Penultimate-layer features of images (for {@link syntheticFeatureDistances}). */
  async features(input: ClassifierInput, options: { batchSize?: number } = {}): Promise<FeatureMatrix> {
    return (await this.predict(input, options)).features;
  }

  /** Frees the weights (idempotent). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    tf.dispose(Object.values(this.weights));
  }

  private live(): void {
    if (this.disposed) throw new InputError('classifier used after dispose()', { code: 'E_DISPOSED', field: 'SyntheticAttributeClassifier' });
  }
}

/** Public (PyTorch) layout → eager layout. */
function toEager(key: string, t: tf.Tensor, cfg: ClassifierConfig): tf.Tensor {
  if (key.startsWith('convs.') && key.endsWith('.weight')) return tf.transpose(t, [2, 3, 1, 0]); // [O,I,3,3] → [3,3,I,O]
  if (key === 'feature.weight') {
    const side = finalSide(cfg);
    const c = cfg.convs[cfg.convs.length - 1]!.channels;
    // [F, C·s·s] (PyTorch flatten of NCHW) → [s·s·C, F] (flatten of NHWC)
    return tf.reshape(tf.transpose(tf.reshape(t, [cfg.featureDim, c, side, side]), [2, 3, 1, 0]), [side * side * c, cfg.featureDim]);
  }
  if (key.endsWith('.weight')) return tf.transpose(t); // [out, in] → [in, out]
  return tf.clone(t);
}

/** Eager layout → public (PyTorch) layout. */
function toPublic(key: string, t: tf.Tensor, cfg: ClassifierConfig): tf.Tensor {
  if (key.startsWith('convs.') && key.endsWith('.weight')) return tf.transpose(t, [3, 2, 0, 1]);
  if (key === 'feature.weight') {
    const side = finalSide(cfg);
    const c = cfg.convs[cfg.convs.length - 1]!.channels;
    return tf.reshape(tf.transpose(tf.reshape(t, [side, side, c, cfg.featureDim]), [3, 2, 0, 1]), [cfg.featureDim, c * side * side]);
  }
  if (key.endsWith('.weight')) return tf.transpose(t);
  return tf.clone(t);
}

// ---- training --------------------------------------------------------------------------------------------------

/** Per-head class indices of a batch; −1 where a head does not apply to a sample. */
export type HeadTargets = Record<HeadName, Int32Array>;

export function encodeTargets(attributes: readonly SyntheticAttributes[], heads: Record<string, readonly string[]> = syntheticHeadClasses()): HeadTargets {
  const out = {} as HeadTargets;
  for (const h of HEAD_NAMES) out[h] = new Int32Array(attributes.length).fill(-1);
  attributes.forEach((a, i) => {
    const t = attributeTargets(a);
    for (const h of HEAD_NAMES) {
      const label = t[h];
      if (label === undefined) continue;
      const idx = heads[h]!.indexOf(label);
      if (idx < 0) throw new InputError('label not in the head vocabulary', { field: `attributes[${i}].${h}`, expected: heads[h], found: label });
      out[h][i] = idx;
    }
  });
  return out;
}

/**
 * Training loss: the sum over heads of the mean softmax cross-entropy over the samples the head applies to.
 * x `[B, S, S, 3]` NHWC in [−1, 1]. Returns a scalar the caller owns.
 */
export function classifierLoss(model: SyntheticAttributeClassifier, x: tf.Tensor4D, targets: HeadTargets): tf.Scalar {
  return tf.tidy(() => {
    const { logits } = model.forward(x);
    const terms: tf.Tensor[] = [];
    for (const h of HEAD_NAMES) {
      const idx = targets[h];
      const valid = idx.reduce((s, v) => s + (v >= 0 ? 1 : 0), 0);
      if (valid === 0) continue;
      const z = logits[h];
      const onehot = tf.oneHot(tf.tensor1d(idx, 'int32'), z.shape[1]); // rows of −1 are all zero
      const logp = tf.sub(z, tf.logSumExp(z, 1, true));
      terms.push(tf.div(tf.neg(tf.sum(tf.mul(onehot, logp))), valid));
    }
    return (terms.length > 0 ? tf.addN(terms) : tf.scalar(0)) as tf.Scalar;
  });
}

// ---- distances -------------------------------------------------------------------------------------------------

export interface SyntheticDistances {
  /** Fréchet distance of the classifier features (FID analogue). */
  fid: number;
  /** CMMD of the L2-normalised features (σ, scale as in {@link cmmd}; reference σ = 10, ×1000). */
  cmmd: number;
}

/** FID- and CMMD-style distances between generated and reference features of the synthetic classifier. */
export async function syntheticFeatureDistances(
  generated: FeatureMatrix,
  reference: FeatureMatrix,
  options: LinalgOptions & { cmmd?: CmmdOptions } = {},
): Promise<SyntheticDistances> {
  const [gx, gy] = [await gaussianStats(generated, options), await gaussianStats(reference, options)];
  const { fid } = await frechetDistance(gx, gy, options);
  const { cmmd: c } = await cmmd(l2NormalizeRows(generated), l2NormalizeRows(reference), options.cmmd);
  return { fid, cmmd: c };
}
