import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { Rng, loadNoiseSchedule, type DDPMScheduler, type ProgressCallback } from '@aptp/core';
import { COLOR_NAMES, SHAPES, SyntheticWorld, captionFor, writeContactSheet, type ContactSheetTile, type RgbImage, type SyntheticAttributes, type SyntheticSplit } from '@aptp/datasets';
import { SyntheticAttributeClassifier, promptAdherence, syntheticFeatureDistances, type AdherenceAttribute, type Ratio } from '@aptp/eval';
import { HashedTextConditioner, loadTextToImage, loadUNet, toRgb8, type UNet2DConditionModel, type UNetEngineKind } from '@aptp/unet-gating';
import { rgbImagesToNchw } from '../steps/teacherStep';

/**
 * Does a teacher use its prompt? (issue 7 item 1: "sampling from it gives recognisable shapes for the prompts").
 *
 * `captionReliance` measures it without sampling: on n validation images (prompts never trained on) at fixed
 * timesteps t, the mean squared error of the prediction against the training target with
 *   - the true caption,
 *   - the empty caption (what classifier-free guidance subtracts),
 *   - a wrong caption (the caption of another image of the batch: rotated by one),
 * all with the same x_t. A model that ignores the text has the three equal; the gap wrong − true is what the text
 * explains (relative gap = (wrong − true) / wrong). `teacherSampleSheet` draws real renders above teacher samples
 * for a few prompts of each category.
 */
export interface CaptionRelianceRow {
  t: number;
  true: number;
  empty: number;
  wrong: number;
  /** (wrong − true) / wrong. */
  relativeGap: number;
}

export interface CaptionRelianceOptions {
  /** Validation images (default 32). */
  samples?: number;
  timesteps?: number[];
  seed?: number;
  /** Forward batch size (default 16). */
  batchSize?: number;
}

export interface TeacherParts {
  unet: UNet2DConditionModel<tf.Tensor>;
  conditioner: HashedTextConditioner;
  scheduler: DDPMScheduler;
}

export const RELIANCE_TIMESTEPS = [300, 600, 900];

export function captionReliance(model: TeacherParts, world: SyntheticWorld, options: CaptionRelianceOptions = {}): CaptionRelianceRow[] {
  const n = options.samples ?? 32;
  const B = options.batchSize ?? 16;
  const seed = options.seed ?? 0;
  const split: SyntheticSplit = 'validation';
  const rows: CaptionRelianceRow[] = [];
  for (const t of options.timesteps ?? RELIANCE_TIMESTEPS) {
    const sums = { true: 0, empty: 0, wrong: 0 };
    for (let start = 0; start < n; start += B) {
      const idx = Array.from({ length: Math.min(B, n - start) }, (_, b) => start + b);
      const samples = idx.map((i) => world.sample(split, i));
      const { pixels: x0, shape } = rgbImagesToNchw(samples.map((s) => s.image));
      const size = x0.length / idx.length;
      const noise = new Float32Array(x0.length);
      idx.forEach((i, b) => noise.set(Rng.forKey(seed, 'caption-reliance', i).normal(size), b * size));
      const captions = samples.map((s) => s.caption);
      // the wrong caption: the next image's (rotated across the whole evaluated set, so a batch of 1 works too)
      const wrong = idx.map((i) => world.sample(split, (i + 1) % n).caption);
      const ts = new Int32Array(idx.length).fill(t);
      tf.tidy(() => {
        const x0t = tf.tensor4d(x0, shape);
        const nt = tf.tensor4d(noise, shape);
        const noisy = model.scheduler.addNoise(x0t, nt, ts);
        const target = model.scheduler.getTarget(x0t, nt, ts);
        const err = (prompts: string[]) => {
          const pred = model.unet.forward({ sample: noisy, timestep: tf.tensor1d(ts, 'int32'), encoderHiddenStates: model.conditioner.encodeSync(prompts), blockOutputs: false }).sample;
          return tf.sum(tf.mean(tf.square(tf.sub(pred, target)), [1, 2, 3])).dataSync()[0]!;
        };
        sums.true += err(captions);
        sums.empty += err(captions.map(() => ''));
        sums.wrong += err(wrong);
      });
    }
    const r = { t, true: sums.true / n, empty: sums.empty / n, wrong: sums.wrong / n };
    rows.push({ ...r, relativeGap: (r.wrong - r.true) / r.wrong });
  }
  return rows;
}

/** A word the {@link promptSwap} check exchanges: the object's shape or its colour. */
export type SwapAttribute = 'shape' | 'color';
export const SWAP_ATTRIBUTES: readonly SwapAttribute[] = ['shape', 'color'];

export interface PromptSwapRow {
  attribute: SwapAttribute;
  t: number;
  /** Shape-category prompts read. */
  samples: number;
  /** Share of x̂₀(true caption) the evaluator reads as the true value. */
  trueAsTrue: number;
  /** Share of x̂₀(swapped caption) read as the swapped-in value (a teacher that follows the word: high). */
  swappedAsSwapped: number;
  /** Share of x̂₀(swapped caption) read as the true value (a teacher that ignores the word: ≈ trueAsTrue). */
  swappedAsTrue: number;
  /** Share of the real renders read as the true value (the evaluator's ceiling). */
  realAsTrue: number;
}

export interface PromptSwapOptions {
  /** Shape-category validation prompts (the first n; default 64). */
  samples?: number;
  timesteps?: number[];
  seed?: number;
}

export const SWAP_TIMESTEPS = [200, 400, 600, 800];

/** One prompt of the {@link promptSwap} check: a shape-category validation render, its caption, and the same with one word exchanged. */
export interface PromptSwapCase {
  row: number;
  image: RgbImage;
  attributes: SyntheticAttributes;
  /** The true value of the exchanged attribute and the value swapped in. */
  value: string;
  swappedValue: string;
  swappedAttributes: SyntheticAttributes;
  /** Both captions come from the same template and synonyms (`Rng.forKey(seed, 'prompt-swap', row)`). */
  caption: string;
  swappedCaption: string;
}

/**
 * The first n shape-category validation prompts with one word exchanged: the object's shape → another shape, or
 * its colour → another colour that is not the background's (case k takes the k-th other value, cyclically).
 */
export function promptSwapCases(world: SyntheticWorld, attribute: SwapAttribute, n: number, seed = 0): PromptSwapCase[] {
  const cases: PromptSwapCase[] = [];
  for (let row = 0; cases.length < n && row < 100 * n; row++) {
    if (world.prompt('validation', row).attributes.category !== 'shape') continue;
    const { image, attributes } = world.sample('validation', row);
    const swappedAttributes = structuredClone(attributes);
    const o = attributes.objects[0]!;
    const so = swappedAttributes.objects[0]!;
    const k = cases.length;
    if (attribute === 'shape') {
      const others = SHAPES.filter((x) => x !== o.kind);
      so.kind = others[k % others.length]!;
    } else {
      const others = COLOR_NAMES.filter((c) => c !== o.color && c !== attributes.background.color);
      so.color = others[k % others.length]!;
    }
    const caption = (a: SyntheticAttributes) => captionFor(a, Rng.forKey(seed, 'prompt-swap', row)).caption;
    const value = attribute === 'shape' ? o.kind : o.color;
    const swappedValue = attribute === 'shape' ? so.kind : so.color;
    cases.push({ row, image, attributes, value, swappedValue, swappedAttributes, caption: caption(attributes), swappedCaption: caption(swappedAttributes) });
  }
  return cases;
}

/**
 * Does the teacher follow one word of the prompt? On shape-category validation prompts (one object), each real
 * render is noised to x_t and the teacher predicts x̂₀ twice: with its caption and with the same caption (same
 * template and synonyms) whose shape (or colour) word names another value ({@link promptSwapCases}). The evaluator
 * reads x̂₀: a teacher that uses the word draws the swapped value from the swapped caption (`swappedAsSwapped`
 * high); one that ignores it draws what x_t shows either way (`swappedAsTrue` ≈ `trueAsTrue`, `swappedAsSwapped`
 * near chance). What x_t still shows (a colour, more than a 2–4 px outline) competes with the word, more at small t.
 */
export async function promptSwap(model: TeacherParts, world: SyntheticWorld, classifier: SyntheticAttributeClassifier, attribute: SwapAttribute, options: PromptSwapOptions = {}): Promise<PromptSwapRow[]> {
  const seed = options.seed ?? 0;
  const cases = promptSwapCases(world, attribute, options.samples ?? 64, seed);
  const n = cases.length;
  const share = (labels: string[], values: readonly string[]) => labels.filter((l, k) => l === values[k]).length / n;
  const read = async (images: RgbImage[]) => (await classifier.predict(images)).predictions.map((p) => p.labels[attribute]);
  const truth = cases.map((c) => c.value);
  const realAsTrue = share(await read(cases.map((c) => c.image)), truth);
  const { pixels, shape } = rgbImagesToNchw(cases.map((c) => c.image));
  const size = pixels.length / n;
  const noise = new Float32Array(pixels.length);
  cases.forEach((c, b) => noise.set(Rng.forKey(seed, 'prompt-swap', 'noise', c.row).normal(size), b * size));
  const rows: PromptSwapRow[] = [];
  for (const t of options.timesteps ?? SWAP_TIMESTEPS) {
    const ts = new Int32Array(n).fill(t);
    const predict = async (prompts: string[]): Promise<RgbImage[]> => {
      const x0 = tf.tidy(() => {
        const noisy = model.scheduler.addNoise(tf.tensor4d(pixels, shape), tf.tensor4d(noise, shape), ts);
        const out = model.unet.forward({ sample: noisy, timestep: tf.tensor1d(ts, 'int32'), encoderHiddenStates: model.conditioner.encodeSync(prompts), blockOutputs: false }).sample;
        return model.scheduler.predictOriginalSample(out, noisy, ts);
      });
      const data = (await x0.data()) as Float32Array;
      x0.dispose();
      return toRgb8({ data, dims: shape }).map((rgb) => ({ width: shape[3], height: shape[2], data: rgb }));
    };
    const fromTrue = await read(await predict(cases.map((c) => c.caption)));
    const fromSwapped = await read(await predict(cases.map((c) => c.swappedCaption)));
    rows.push({ attribute, t, samples: n, trueAsTrue: share(fromTrue, truth), swappedAsSwapped: share(fromSwapped, cases.map((c) => c.swappedValue)), swappedAsTrue: share(fromSwapped, truth), realAsTrue });
  }
  return rows;
}

export function formatPromptSwap(rows: PromptSwapRow[]): string {
  const lines = ['attribute      t   x̂0(true) read true   x̂0(swapped) read swapped   x̂0(swapped) read true   real renders'];
  const pct = (x: number, w: number) => `${(100 * x).toFixed(1)} %`.padStart(w);
  for (const r of rows) lines.push(`${r.attribute.padEnd(9)} ${String(r.t).padStart(6)}   ${pct(r.trueAsTrue, 18)}   ${pct(r.swappedAsSwapped, 24)}   ${pct(r.swappedAsTrue, 21)}   ${pct(r.realAsTrue, 12)}`);
  return `${lines.join('\n')}\n`;
}

/** Loads a teacher folder's parts (unet/, conditioning/, the noise schedule of scheduler/). */
export async function loadTeacherParts(dir: string): Promise<TeacherParts> {
  return {
    unet: await loadUNet(path.join(dir, 'unet')),
    conditioner: HashedTextConditioner.load(dir),
    scheduler: loadNoiseSchedule(path.join(dir, 'scheduler')),
  };
}

export function formatReliance(rows: CaptionRelianceRow[]): string {
  const lines = ['     t   true caption   empty caption   wrong caption   (wrong − true)/wrong'];
  for (const r of rows) {
    lines.push(`${String(r.t).padStart(6)}   ${r.true.toFixed(4).padStart(12)}   ${r.empty.toFixed(4).padStart(13)}   ${r.wrong.toFixed(4).padStart(13)}   ${(100 * r.relativeGap).toFixed(1).padStart(8)} %`);
  }
  return `${lines.join('\n')}\n`;
}

/** Sampling seed of the first prompt of a sample sheet or guidance sweep (prompt k: + k). */
export const TEACHER_SAMPLE_SEED = 1000;

/**
 * CFG scale of the committed teacher (the demo's and the sample sheet's): the lowest FID-style distance of
 * `teacher-check --guidance-sweep 1,1.5,2,3,4.5,7.5` on held-out validation rows 128–255 (teacher only, never the eval
 * rows; README "Sampling guidance").
 */
export const TEACHER_GUIDANCE = 1.5;

export interface SampleSheetOptions {
  perCategory?: number;
  steps?: number;
  guidance?: number;
  seed?: number;
  /** UNet engine (default auto: ONNX Runtime). */
  engine?: UNetEngineKind;
  onProgress?: ProgressCallback;
}

/** Real renders (REAL …) above teacher samples (GEN …) of the first validation prompts of every category. */
export async function teacherSampleSheet(dir: string, world: SyntheticWorld, out: string, options: SampleSheetOptions = {}): Promise<string[]> {
  const perCat = options.perCategory ?? 4;
  const categories = ['shape', 'count', 'relation', 'text'];
  const byCat = new Map<string, number[]>(categories.map((c) => [c, []]));
  for (let i = 0; [...byCat.values()].some((l) => l.length < perCat) && i < 10_000; i++) {
    const l = byCat.get(world.prompt('validation', i).attributes.category);
    if (l && l.length < perCat) l.push(i);
  }
  const rows = categories.flatMap((c) => byCat.get(c)!);
  const samples = rows.map((i) => world.sample('validation', i));
  const pipe = await loadTeacherPipeline(dir, options.engine);
  try {
    const images = await sampleCaptions(pipe, samples, { seed: options.seed ?? TEACHER_SAMPLE_SEED, steps: options.steps ?? 30, guidance: options.guidance ?? TEACHER_GUIDANCE, onProgress: options.onProgress });
    const tiles: ContactSheetTile[] = [];
    const cols = 8;
    for (let g = 0; g < samples.length; g += cols) {
      const chunk = samples.slice(g, g + cols);
      chunk.forEach((s) => tiles.push({ image: s.image, caption: `REAL ${s.caption}` }));
      chunk.forEach((s, k) => tiles.push({ image: images[g + k]!, caption: `GEN ${s.caption}` }));
    }
    await writeContactSheet(out, tiles, { columns: cols, captionLines: 5, scale: 4 });
    return samples.map((s) => s.caption);
  } finally {
    await pipe.dispose();
  }
}

type TeacherPipeline = Awaited<ReturnType<typeof loadTextToImage>>;

/**
 * A teacher folder as a text-to-image pipeline (its HashedTextConditioner). The default `auto` engine samples with ONNX
 * Runtime on an in-memory export (≈ 20× tfjs-wasm here; the session-5 sweep reads the same to the printed digits);
 * `tfjs` runs the eager model.
 */
function loadTeacherPipeline(dir: string, engine: UNetEngineKind = 'auto'): Promise<TeacherPipeline> {
  return loadTextToImage(dir, { conditioner: HashedTextConditioner.load(dir), engine });
}

/** Teacher samples (DDIM) of the captions of world samples, at their size; caption k with seed `seed + k`. */
async function sampleCaptions(
  pipe: TeacherPipeline,
  samples: readonly { caption: string; image: RgbImage }[],
  o: { seed: number; steps: number; guidance: number; onProgress?: ProgressCallback },
): Promise<RgbImage[]> {
  const { width, height } = samples[0]!.image;
  const requests = samples.map((s, k) => ({ prompt: s.caption, seed: o.seed + k, steps: o.steps, guidance: o.guidance, width, height }));
  const images = await pipe.generate(pipe.unet!, requests, { scheduler: 'DDIMScheduler', onProgress: o.onProgress });
  return images.map((im) => ({ width, height, data: im.rgb }));
}

/** One guidance scale of {@link guidanceSweep}: the evaluator's reading of the teacher's samples. */
export interface GuidanceSweepRow {
  /** Classifier-free guidance scale; `null` for the real renders of the same prompts (the evaluator's ceiling). */
  guidance: number | null;
  /** FID- and CMMD-style distances to the real renders (0 for the renders themselves). */
  fid: number;
  cmmd: number;
  /** Strict adherence (every stated attribute right) and the share per stated attribute. */
  adherence: Ratio;
  perAttribute: Partial<Record<AdherenceAttribute, Ratio>>;
}

export interface GuidanceSweepOptions {
  guidances: number[];
  /** Validation rows firstRow … firstRow + prompts − 1 (default 128 … 255: after the demo's eval rows 0 … 127). */
  firstRow?: number;
  prompts?: number;
  /** DDIM steps (default 20, the demo's). */
  steps?: number;
  /** Sampling seed of prompt k: seed + k (default TEACHER_SAMPLE_SEED). */
  seed?: number;
  /** UNet engine (default auto: ONNX Runtime). */
  engine?: UNetEngineKind;
  onProgress?: ProgressCallback;
}

/**
 * How strong should classifier-free guidance be for this teacher? Samples the same held-out validation prompts at
 * each guidance scale (DDIM, tfjs) and reads them with the synthetic-world evaluator: distances to the real renders
 * and prompt adherence per stated attribute, beside the real renders' own adherence. Teacher-only and on prompts the
 * demo does not evaluate, so a demo's guidance can be chosen from it without looking at the claims.
 */
export async function guidanceSweep(dir: string, world: SyntheticWorld, evaluatorDir: string, o: GuidanceSweepOptions): Promise<GuidanceSweepRow[]> {
  const first = o.firstRow ?? 128;
  const n = o.prompts ?? 128;
  const samples = Array.from({ length: n }, (_, k) => world.sample('validation', first + k));
  const truth = samples.map((s) => s.attributes);
  const classifier = SyntheticAttributeClassifier.load(evaluatorDir);
  const pipe = await loadTeacherPipeline(dir, o.engine);
  try {
    const real = await classifier.predict(samples.map((s) => s.image));
    const row = async (guidance: number | null, p: Awaited<ReturnType<typeof classifier.predict>>): Promise<GuidanceSweepRow> => {
      const a = promptAdherence(p.predictions, truth);
      const d = guidance === null ? { fid: 0, cmmd: 0 } : await syntheticFeatureDistances(p.features, real.features);
      return { guidance, fid: d.fid, cmmd: d.cmmd, adherence: a.overall, perAttribute: a.perAttribute };
    };
    const rows = [await row(null, real)];
    for (const [gi, guidance] of o.guidances.entries()) {
      const onProgress: ProgressCallback | undefined = o.onProgress && ((e) => o.onProgress!({ ...e, label: `guidance ${guidance}`, done: gi * e.total + e.done, total: o.guidances.length * e.total }));
      const images = await sampleCaptions(pipe, samples, { seed: o.seed ?? TEACHER_SAMPLE_SEED, steps: o.steps ?? 20, guidance, onProgress });
      rows.push(await row(guidance, await classifier.predict(images)));
    }
    return rows;
  } finally {
    classifier.dispose();
    await pipe.dispose();
  }
}

/** The sweep as a fixed-width table (one row per guidance, the real renders first). */
export function formatGuidanceSweep(rows: GuidanceSweepRow[]): string {
  const attrs = [...new Set(rows.flatMap((r) => Object.keys(r.perAttribute)))] as AdherenceAttribute[];
  const pct = (r: Ratio | undefined) => (r ? `${(100 * r.ratio).toFixed(1)} %` : '–').padStart(9);
  const head = `${'guidance'.padStart(12)} ${'FID-style'.padStart(10)} ${'CMMD-style'.padStart(10)} ${'adherence'.padStart(9)} ${attrs.map((a) => a.padStart(9)).join(' ')}\n`;
  return head + rows.map((r) => `${(r.guidance === null ? 'real renders' : String(r.guidance)).padStart(12)} ${r.fid.toFixed(1).padStart(10)} ${r.cmmd.toFixed(3).padStart(10)} ${pct(r.adherence)} ${attrs.map((a) => pct(r.perAttribute[a])).join(' ')}\n`).join('');
}
