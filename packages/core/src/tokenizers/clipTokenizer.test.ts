import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { ClipTokenizer, bytesToUnicode, clipCleanText } from './clipTokenizer';
import { loadClipTokenizer, parseMerges, vocabFromMerges } from './load';

// Merges in rank order (a tiny stand-in for CLIP's 48 894).
const MERGES: [string, string][] = [
  ['h', 'e'],
  ['l', 'l'],
  ['he', 'll'],
  ['hell', 'o</w>'],
  ['c', 'a'],
  ['ca', 't'],
  ['cat', 's</w>'],
  ['l', 'o</w>'],
];

function tiny(): ClipTokenizer {
  return new ClipTokenizer({ vocab: vocabFromMerges(MERGES), merges: MERGES });
}

describe('ClipTokenizer', () => {
  test('vocabulary layout of the OpenAI SimpleTokenizer (real CLIP ids: "!"=0, "a</w>"=320)', () => {
    const v = vocabFromMerges(MERGES);
    expect(v.get('!')).toBe(0);
    expect(v.get('a')).toBe(64);
    expect(v.get('a</w>')).toBe(320); // CLIP: "a photo of a cat" → [49406, 320, 1125, 539, 320, 2368, 49407]
    expect(v.get('hello</w>')).toBe(512 + 3);
    expect(v.get('<|startoftext|>')).toBe(512 + MERGES.length);
    expect(v.get('<|endoftext|>')).toBe(512 + MERGES.length + 1);
    const table = bytesToUnicode();
    expect(new Set(table).size).toBe(256);
    expect(table[0x20]).toBe('Ġ'); // space → U+0120, as in GPT-2
  });

  test('BPE applies the lowest-rank merge first, repeatedly', () => {
    const t = tiny();
    expect(t.bpe('hello')).toEqual(['hello</w>']);
    // "hallo": (l,l) has rank 1 < (l,o</w>) rank 7, so "ll" forms first and "lo</w>" never does.
    expect(t.bpe('hallo')).toEqual(['h', 'a', 'll', 'o</w>']);
    expect(t.bpe('cats')).toEqual(['cats</w>']);
    expect(t.bpe('cat')).toEqual(['ca', 't</w>']); // (ca, t) exists but the last symbol is t</w>
    expect(t.bpe('x')).toEqual(['x</w>']);
  });

  test('cleaning and pre-tokenisation follow simple_tokenizer', () => {
    expect(clipCleanText('  A &amp;amp; B\n\t C&#39;s  ')).toBe("a & b c's");
    const t = tiny();
    const v = vocabFromMerges(MERGES);
    // "it's" → it | 's ; digits split one by one; punctuation runs stay together.
    expect(t.encode("It's 42 cats!!")).toEqual([
      v.get('i')!, v.get('t</w>')!, v.get("'")!, v.get('s</w>')!, v.get('4</w>')!, v.get('2</w>')!, v.get('cats</w>')!, v.get('!')!, v.get('!</w>')!,
    ]);
    // Non-ASCII goes through UTF-8 bytes: é = C3 A9.
    const table = bytesToUnicode();
    expect(t.encode('é')).toEqual([v.get(table[0xc3]!)!, v.get(`${table[0xa9]!}</w>`)!]);
    expect(t.decode(t.encode('Hello  cats, é!'))).toBe('hello cats , é !');
  });

  test('tokenize pads to 77 and truncates over-long captions like clip.tokenize(truncate=True), reporting them', () => {
    const t = tiny();
    const long = Array.from({ length: 100 }, () => 'hello').join(' ');
    const enc = t.tokenize(['hello cats', long]);
    expect(enc.contextLength).toBe(77);
    expect(enc.ids.length).toBe(2 * 77);
    expect(Array.from(enc.ids.subarray(0, 5))).toEqual([t.sotId, 515, 512 + 6, t.eotId, 0]);
    expect(enc.lengths).toEqual([4, 77]);
    expect(enc.truncated).toEqual([{ index: 1, tokens: 102 }]);
    expect(enc.ids[77 + 76]).toBe(t.eotId);
    expect(enc.ids[77 + 75]).toBe(515);
    expect(t.tokenize(['hello'], 77, t.eotId).ids[5]).toBe(t.eotId);
  });

  test('loads vocab.json + merges.txt, tokenizer.json and bpe_simple_vocab .gz with identical ids', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-tok-'));
    try {
      const vocab = Object.fromEntries(vocabFromMerges(MERGES));
      const mergesTxt = `#version: 0.2\n${MERGES.map((m) => m.join(' ')).join('\n')}\n`;
      const a = path.join(root, 'hf');
      fs.mkdirSync(a);
      fs.writeFileSync(path.join(a, 'vocab.json'), JSON.stringify(vocab));
      fs.writeFileSync(path.join(a, 'merges.txt'), mergesTxt);
      const b = path.join(root, 'fast');
      fs.mkdirSync(b);
      const { '<|startoftext|>': sot, '<|endoftext|>': eot, ...plain } = vocab;
      fs.writeFileSync(
        path.join(b, 'tokenizer.json'),
        JSON.stringify({
          model: { type: 'BPE', vocab: plain, merges: MERGES.map((m) => m.join(' ')) },
          added_tokens: [
            { id: sot, content: '<|startoftext|>' },
            { id: eot, content: '<|endoftext|>' },
          ],
        }),
      );
      const c = path.join(root, 'openai');
      fs.mkdirSync(c);
      fs.writeFileSync(path.join(c, 'bpe_simple_vocab_16e6.txt.gz'), gzipSync(Buffer.from(mergesTxt)));
      const text = 'Hello cats, hello!';
      const ref = tiny().tokenize([text]).ids;
      for (const dir of [a, b, c]) expect(loadClipTokenizer(dir).tokenize([text]).ids).toEqual(ref);
      expect(() => loadClipTokenizer(root)).toThrow(/no CLIP tokenizer files found.*vocab\.json \+ merges\.txt/);
      expect(parseMerges('#version: 0.2\na b\n\nc d\r\n')).toEqual([
        ['a', 'b'],
        ['c', 'd'],
      ]);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
