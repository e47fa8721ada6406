import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError, loadClipTokenizer } from '@aptp/core';
import { expectClose } from '@aptp/core/testing';
import { ClipTextConditioner } from './clipText';
import { tempDir, textEncoderReference, writeTextEncoder, writeTokenizer } from './testFixtures';

const PROMPTS = ['a red circle', 'blue', 'red red circle on blue'];

async function folder(idsType: 'int64' | 'int32', options: { padToken?: string; maxLength?: number; tokenizerIn?: string } = {}) {
  const dir = tempDir();
  const vocab = writeTokenizer(path.join(dir, options.tokenizerIn ?? 'tokenizer'), { padToken: options.padToken, maxLength: options.maxLength ?? 8 });
  const enc = writeTextEncoder(path.join(dir, 'text_encoder', 'model.onnx'), vocab.size, 6, options.maxLength ?? 8, idsType);
  return { dir, vocab, enc };
}

describe('ClipTextConditioner (text_encoder/model.onnx + tokenizer/ through ORT)', () => {
  for (const idsType of ['int64', 'int32'] as const) {
    it(`tokenizes as CLIP (pad "!", 8 tokens) and returns last_hidden_state [B, S, D] (${idsType} ids)`, async () => {
      const { dir, vocab, enc } = await folder(idsType);
      const c = await ClipTextConditioner.load(dir, { batchSize: 2 });
      try {
        expect(c.sequenceLength).toBe(8);
        expect(c.dim).toBe(6);
        expect(c.padId).toBe(vocab.get('!'));
        const ids = loadClipTokenizer(path.join(dir, 'tokenizer')).tokenize(PROMPTS, 8, vocab.get('!')).ids;
        expect(Array.from(c.tokenize(PROMPTS))).toEqual(Array.from(ids));
        const h = await c.embed(PROMPTS);
        expect(h.dims).toEqual([3, 8, 6]);
        expectClose(h.data, textEncoderReference(enc, ids), { name: 'last_hidden_state', rtol: 0 });
        // "red" is one merged token; "blue" is sot, bl, u, e</w>, eot, then "!" padding
        expect(ids[1]).toBe(vocab.get('a</w>'));
        expect(ids[2]).toBe(vocab.get('red</w>'));
        expect(Array.from(ids.subarray(8, 16))).toEqual([vocab.get('<|startoftext|>'), vocab.get('bl'), vocab.get('u'), vocab.get('e</w>'), vocab.get('<|endoftext|>'), 0, 0, 0]);
        expect(vocab.get('!')).toBe(0);
        const t = await c.encode(['blue']);
        expect(t.shape).toEqual([1, 8, 6]);
        expect(Array.from(t.dataSync())).toEqual(Array.from(h.data.subarray(48, 96)));
        t.dispose();
      } finally {
        await c.dispose();
      }
    });
  }

  it('pads with <|endoftext|> when the tokenizer says so, counts truncations, reads tokenizer files from text_encoder/', async () => {
    const { dir, vocab } = await folder('int64', { padToken: '<|endoftext|>', maxLength: 5, tokenizerIn: 'text_encoder' });
    const c = await ClipTextConditioner.load(dir);
    try {
      const ids = c.tokenize(['red', 'a b c d e f g']);
      const eot = vocab.get('<|endoftext|>')!;
      expect(c.padId).toBe(eot);
      expect(Array.from(ids.subarray(0, 5))).toEqual([vocab.get('<|startoftext|>'), ...loadClipTokenizer(path.join(dir, 'text_encoder')).encode('red'), eot, eot, eot]);
      expect(ids[9]).toBe(eot);
      expect(c.truncatedPrompts).toBe(1);
    } finally {
      await c.dispose();
    }
  });

  it('lists every missing file', async () => {
    const dir = tempDir();
    await expect(ClipTextConditioner.load(dir)).rejects.toThrow(InputError);
    await expect(ClipTextConditioner.load(dir)).rejects.toThrow(/text_encoder\/model\.onnx.*tokenizer/);
    writeTokenizer(path.join(dir, 'tokenizer'));
    await expect(ClipTextConditioner.load(dir)).rejects.toThrow(/missing text_encoder\/model\.onnx$/);
    fs.mkdirSync(path.join(dir, 'text_encoder'));
  });
});
