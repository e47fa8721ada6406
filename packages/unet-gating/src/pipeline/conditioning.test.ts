import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, InputError } from '@aptp/core';
import { describeBackends, expectNoTensorLeak } from '@aptp/core/testing';
import { HashedTextConditioner, parseConditioningConfig, promptTokens } from './conditioning';

const PROMPTS = ['a red circle left of a blue square', 'the letter A in yellow', '', 'a group of 3 little black discs'];

describe('promptTokens', () => {
  it('splits on non-alphanumerics, lower-cases words, keeps single upper-case letters and digits', () => {
    expect(promptTokens('The letter A, in YELLOW!')).toEqual(['the', 'letter', 'A', 'in', 'yellow']);
    expect(promptTokens('a medium-sized 3')).toEqual(['a', 'medium', 'sized', '3']);
    expect(promptTokens('  ')).toEqual([]);
  });
});

describe('HashedTextConditioner (host)', () => {
  const c = new HashedTextConditioner({ seed: 3, sequenceLength: 8, dim: 6, positionScale: 0.5 });
  const S = 8;
  const D = 6;

  it('is deterministic: two instances with the same config give identical bits', () => {
    const other = new HashedTextConditioner({ seed: 3, sequenceLength: 8, dim: 6, positionScale: 0.5 });
    expect(Array.from(other.encodeHost(PROMPTS))).toEqual(Array.from(c.encodeHost(PROMPTS)));
  });

  it('a different seed gives different word vectors', () => {
    const other = new HashedTextConditioner({ seed: 4, sequenceLength: 8, dim: 6 });
    const a = c.encodeHost(['red']);
    const b = other.encodeHost(['red']);
    expect(Array.from(a.subarray(D, 2 * D))).not.toEqual(Array.from(b.subarray(D, 2 * D)));
  });

  it('encodes each prompt independently of the batch', () => {
    const batch = c.encodeHost(PROMPTS);
    PROMPTS.forEach((p, b) => {
      expect(Array.from(c.encodeHost([p]))).toEqual(Array.from(batch.subarray(b * S * D, (b + 1) * S * D)));
    });
  });

  it('position p of token w is e(w) + positionScale·PE(p), padding is zero, long prompts are truncated', () => {
    const row = c.encodeHost(['red circle']);
    const e = c.tokenVector('circle');
    // position 2 (after <bos>, red): PE(2, i) = sin/cos(2 · 10000^(−2⌊i/2⌋/D))
    for (let i = 0; i < D; i++) {
      const f = Math.pow(10000, -(2 * Math.floor(i / 2)) / D);
      const pe = i % 2 === 0 ? Math.sin(2 * f) : Math.cos(2 * f);
      expect(row[2 * D + i]).toBeCloseTo(e[i]! + 0.5 * pe, 6);
    }
    expect(Array.from(row.subarray(4 * D))).toEqual(new Array((S - 4) * D).fill(0)); // <bos> red circle <eos> | pad…
    expect(c.sequence('one two three four five six seven eight nine')).toEqual(['<bos>', 'one', 'two', 'three', 'four', 'five', 'six', '<eos>']);
    const empty = c.encodeHost(['']);
    expect(Array.from(empty.subarray(2 * D))).toEqual(new Array((S - 2) * D).fill(0));
    expect(empty.subarray(0, 2 * D).some((v) => v !== 0)).toBe(true);
  });

  it('distinguishes the glyph "A" from the article "a"', () => {
    expect(Array.from(c.tokenVector('A'))).not.toEqual(Array.from(c.tokenVector('a')));
  });

  it('word vectors are standard normal on average (no vocabulary needed)', () => {
    const words = Array.from({ length: 400 }, (_, i) => `w${i}`);
    let s = 0;
    let s2 = 0;
    for (const w of words) for (const v of c.tokenVector(w)) (s += v), (s2 += v * v);
    const n = words.length * D;
    expect(Math.abs(s / n)).toBeLessThan(0.1);
    expect(s2 / n).toBeGreaterThan(0.85);
    expect(s2 / n).toBeLessThan(1.15);
  });

  it('config errors name the field; save/load round-trips', () => {
    expect(() => parseConditioningConfig({ type: 'hashedWords', sequenceLength: 1 })).toThrow(/sequenceLength/);
    expect(() => parseConditioningConfig({ type: 'hashedWords', vocab: 3 })).toThrow(ConfigError);
    expect(() => parseConditioningConfig({ type: 'hashedWords', vocab: 3 })).toThrow(/vocab/);
    expect(() => parseConditioningConfig({ type: 'clip' })).toThrow(/type/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cond-'));
    try {
      const file = c.save(dir);
      expect(JSON.parse(fs.readFileSync(file, 'utf8'))._class_name).toBe('HashedTextConditioner');
      const back = HashedTextConditioner.load(dir);
      expect(back.config).toEqual(c.config);
      expect(Array.from(back.encodeHost(PROMPTS))).toEqual(Array.from(c.encodeHost(PROMPTS)));
      expect(() => HashedTextConditioner.load(path.join(dir, 'nope'))).toThrow(InputError);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describeBackends('HashedTextConditioner tensors', () => {
  const c = new HashedTextConditioner({ sequenceLength: 24, dim: 64 });
  it('encode returns [B, S, D] equal to the host encoding, and leaks nothing', async () => {
    const t = await c.encode(PROMPTS);
    expect(t.shape).toEqual([4, 24, 64]);
    expect(Array.from(t.dataSync())).toEqual(Array.from(c.encodeHost(PROMPTS)));
    t.dispose();
    const h = await c.embed(PROMPTS);
    expect(h.dims).toEqual([4, 24, 64]);
    await expectNoTensorLeak(() => tf.dispose(c.encodeSync(PROMPTS)), { name: 'encodeSync' });
  });
});
