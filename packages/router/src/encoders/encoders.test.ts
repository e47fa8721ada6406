import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { InputError, OnnxGraph, Rng } from '@aptp/core';
import { expectClose } from '@aptp/core/testing';
import { CachedPromptEncoder, EmbeddingCache } from './cache';
import { EncodeOptions, PromptEncoder } from './encoder';
import { SENTENCE_TRANSFORMER_FILES, loadSentenceTransformer, meanPool } from './sentenceTransformer';
import { SyntheticPromptEncoder } from './synthetic';

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'router-encoders-'));
}

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  return ab / Math.sqrt(aa * bb);
}

describe('SyntheticPromptEncoder', () => {
  const enc = new SyntheticPromptEncoder({ dim: 32, seed: 3 });

  it('is the documented weighted bag of words and bigrams under a seeded Gaussian projection', async () => {
    const v = (f: string) => Rng.forKey(3, 'synthetic-encoder', f).normal(32);
    const [a, red, cat, ar, rc] = [v('a'), v('red'), v('cat'), v('a red'), v('red cat')];
    const expected = new Float32Array(32).map((_, i) => (a[i]! + red[i]! + cat[i]! + 0.5 * ar[i]! + 0.5 * rc[i]!) / 4);
    const got = await enc.embed(['A  red, CAT!']);
    expectClose(got, expected, { name: 'synthetic embedding', atol: 1e-6 });
    expect(Array.from(await enc.embed(['', '...']))).toEqual(new Array(64).fill(0));
  });

  it('is deterministic, and similarity follows shared words and word order', async () => {
    const other = new SyntheticPromptEncoder({ dim: 32, seed: 3 });
    const prompts = ['a red circle on a blue square', 'a red circle on a green square', 'a blue square on a red circle', 'three yellow stars'];
    const e1 = await enc.embed(prompts);
    const e2 = await other.embed(prompts);
    expect(Array.from(e1)).toEqual(Array.from(e2));
    const row = (i: number) => e1.subarray(i * 32, (i + 1) * 32);
    expect(cosine(row(0), row(1))).toBeGreaterThan(cosine(row(0), row(3)) + 0.3);
    expect(cosine(row(0), row(2))).toBeLessThan(0.999); // same words, different bigrams
    expect(new SyntheticPromptEncoder({ dim: 32, seed: 4 }).id).not.toBe(enc.id);
    const t = await enc.encode(prompts);
    expect(t.shape).toEqual([4, 32]);
    t.dispose();
  });
});

// ---------------------------------------------------------------------------------------------------------------
// A tiny sentence-transformer folder built by the test: WordPiece tokenizer.json, config.json and an ONNX model
// h_t = tanh(E[id_t]·W + c·U) with c = the mask-weighted mean of E over the prompt's tokens (so padding and the
// attention mask matter inside the model, as in a transformer).

const VOCAB = ['<s>', '<pad>', '</s>', '[UNK]', 'a', 'red', 'cat', '##s', 'on', 'the', 'mat', ',', 'blue', 'dog'];
const V = VOCAB.length;
const H0 = 5;
const H = 6;

interface TinyModel {
  dir: string;
  E: Float32Array;
  W: Float32Array;
  U: Float32Array;
}

function buildTinyModel(): TinyModel {
  const dir = tmpDir();
  const rng = Rng.forKey(11, 'tiny-mpnet');
  const E = rng.normal(V * H0);
  const W = rng.normal(H0 * H, 0, 0.5);
  const U = rng.normal(H0 * H, 0, 0.5);
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: ['<s>', '<pad>', '</s>', '[UNK]'].map((content, id) => ({ id, content, special: true })),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
      pair: [],
      special_tokens: { '<s>': { id: '<s>', ids: [0], tokens: ['<s>'] }, '</s>': { id: '</s>', ids: [2], tokens: ['</s>'] } },
    },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab: Object.fromEntries(VOCAB.map((t, i) => [t, i])) },
  };
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 8 }));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'mpnet', hidden_size: H, pad_token_id: 1 }));
  const g = new OnnxGraph('tiny-mpnet');
  g.input('input_ids', 'int64', ['batch', 'seq']);
  g.input('attention_mask', 'int64', ['batch', 'seq']);
  const e = g.op('Gather', [g.initializer('E', { data: E, dims: [V, H0] }), 'input_ids'], { axis: 0 }); // [B,S,H0]
  const m = g.op('Unsqueeze', [g.op('Cast', ['attention_mask'], { to: 1 }), g.constant({ data: BigInt64Array.from([2n]), dims: [1] })]); // [B,S,1]
  const axis1 = g.constant({ data: BigInt64Array.from([1n]), dims: [1] });
  const ctx = g.op('Div', [g.op('ReduceSum', [g.op('Mul', [e, m]), axis1], { keepdims: 1 }), g.op('ReduceSum', [m, axis1], { keepdims: 1 })]); // [B,1,H0]
  const h = g.op('Tanh', [g.op('Add', [g.op('MatMul', [e, g.initializer('W', { data: W, dims: [H0, H] })]), g.op('MatMul', [ctx, g.initializer('U', { data: U, dims: [H0, H] })])])], {}, { output: 'last_hidden_state' });
  g.output(h, 'float32', ['batch', 'seq', H]);
  fs.mkdirSync(path.join(dir, 'onnx'));
  fs.writeFileSync(path.join(dir, 'onnx/model.onnx'), g.toBytes());
  return { dir, E, W, U };
}

/** The same model in float64 JavaScript, from token ids, then mean pooling over the prompt's tokens. */
function referenceEmbedding(model: TinyModel, ids: number[]): Float64Array {
  const ctx = new Float64Array(H0);
  for (const id of ids) for (let k = 0; k < H0; k++) ctx[k] += model.E[id * H0 + k]! / ids.length;
  const out = new Float64Array(H);
  for (const id of ids) {
    for (let j = 0; j < H; j++) {
      let s = 0;
      for (let k = 0; k < H0; k++) s += model.E[id * H0 + k]! * model.W[k * H + j]! + ctx[k]! * model.U[k * H + j]!;
      out[j] += Math.tanh(s) / ids.length;
    }
  }
  return out;
}

describe('SentenceTransformerEncoder (ONNX, all-mpnet-base-v2 layout)', () => {
  let model: TinyModel;
  beforeAll(() => {
    model = buildTinyModel();
  });
  afterAll(() => fs.rmSync(model.dir, { recursive: true, force: true }));

  it('tokenises, runs the ONNX model and mean-pools over the attention mask without normalisation', async () => {
    const enc = await loadSentenceTransformer(model.dir);
    try {
      expect(enc.dim).toBe(H);
      const prompts = ['A red cat', 'cats on the mat, the blue dog', 'the platypus'];
      const ids = [
        [0, 4, 5, 6, 2],
        [0, 6, 7, 8, 9, 10, 11, 2], // truncated to model_max_length 8 (specials included): ', the blue dog' → ','
        [0, 9, 3, 2], // unknown word → [UNK]
      ];
      const got = await enc.embed(prompts);
      prompts.forEach((_, b) => expectClose(got.subarray(b * H, (b + 1) * H), referenceEmbedding(model, ids[b]!), { name: `embedding ${b}`, atol: 2e-6 }));
      expect(enc.truncatedPrompts).toBe(1);
      // Not L2-normalised.
      const norm = Math.hypot(...got.subarray(0, H));
      expect(Math.abs(norm - 1)).toBeGreaterThan(1e-3);
      // Padding-invariant: one prompt at a time gives the same rows as the padded batch.
      for (let b = 0; b < prompts.length; b++) expectClose(await enc.embed([prompts[b]!]), got.subarray(b * H, (b + 1) * H), { name: `single ${b}`, atol: 1e-6 });
      const t = await enc.encode(prompts);
      expect(t.shape).toEqual([3, H]);
      t.dispose();
    } finally {
      await enc.dispose();
      await enc.dispose(); // idempotent
    }
    await expect(enc.embed(['a'])).rejects.toThrow(/after dispose/);
  });

  it('batches by batchSize with the same result', async () => {
    const a = await loadSentenceTransformer(model.dir, { batchSize: 1 });
    const b = await loadSentenceTransformer(model.dir, { batchSize: 64 });
    const prompts = ['a dog', 'red red red cat', 'blue', ''];
    expectClose(await a.embed(prompts), await b.embed(prompts), { name: 'batch 1 vs 64', atol: 1e-6 });
    expect(a.id).toBe(b.id);
    await a.dispose();
    await b.dispose();
  });

  it('lists the expected files when the folder is incomplete', async () => {
    const dir = tmpDir();
    try {
      fs.copyFileSync(path.join(model.dir, 'config.json'), path.join(dir, 'config.json'));
      const err = await loadSentenceTransformer(dir).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InputError);
      expect(String((err as Error).message)).toMatch(/missing tokenizer\.json, onnx\/model\.onnx/);
      expect(String((err as Error).message)).toContain(SENTENCE_TRANSFORMER_FILES.join(', '));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('meanPool divides by max(Σ mask, 1e-9): an all-masked row is 0', () => {
    const pooled = meanPool(Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]), [1, 1, 0, 0], 2, 2, 2);
    expect(Array.from(pooled)).toEqual([2, 3, 0, 0]);
  });
});

/** Counts the prompts it actually encodes. */
class CountingEncoder implements PromptEncoder {
  readonly inner = new SyntheticPromptEncoder({ dim: 8, seed: 1 });
  readonly id = this.inner.id;
  readonly dim = 8;
  encoded: string[] = [];
  async embed(prompts: readonly string[], options?: EncodeOptions): Promise<Float32Array> {
    this.encoded.push(...prompts);
    return this.inner.embed(prompts, options);
  }
  encode(prompts: readonly string[]): Promise<tf.Tensor2D> {
    return this.inner.encode(prompts);
  }
  async dispose(): Promise<void> {}
}

describe('embedding cache', () => {
  it('serves hits from disk, encodes only misses (once per distinct prompt), survives reopening', async () => {
    const root = tmpDir();
    try {
      const inner = new CountingEncoder();
      const cached = new CachedPromptEncoder(inner, root, { flushEvery: 3 });
      const first = await cached.embed(['a cat', 'a dog', 'a cat']);
      expect(inner.encoded).toEqual(['a cat', 'a dog']);
      expectClose(first, await inner.inner.embed(['a cat', 'a dog', 'a cat']), { name: 'first', atol: 0 });
      const second = await cached.embed(['a dog', 'a bird', 'a cat']);
      expect(inner.encoded).toEqual(['a cat', 'a dog', 'a bird']);
      expect([cached.hits, cached.misses]).toEqual([2, 4]);
      expectClose(second, await inner.inner.embed(['a dog', 'a bird', 'a cat']), { name: 'second', atol: 0 });
      await cached.dispose(); // flushes
      const again = new CachedPromptEncoder(new CountingEncoder(), root);
      expect(again.cache.size).toBe(3);
      const third = await again.embed(['a bird', 'a cat', 'a dog']);
      expect((again.encoder as CountingEncoder).encoded).toEqual([]);
      expectClose(third, await inner.inner.embed(['a bird', 'a cat', 'a dog']), { name: 'reopened', atol: 0 });
      // Another encoder id gets its own folder; a folder claimed by another id is refused.
      const otherDim = new CachedPromptEncoder(new SyntheticPromptEncoder({ dim: 8, seed: 2 }), root);
      expect(otherDim.cache.dir).not.toBe(again.cache.dir);
      expect(() => EmbeddingCache.open(root, inner.id, 9)).toThrow(InputError);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
