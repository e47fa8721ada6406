import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigError, InputError } from '../errors';
import { bertNormalize, loadWordPieceTokenizer, preTokenize, wordPieceFromTokenizerJson } from './wordPiece';

const VOCAB = { '<s>': 0, '<pad>': 1, '</s>': 2, '[UNK]': 3, a: 4, red: 5, cat: 6, '##s': 7, on: 8, ',': 9, un: 10, '##want': 11, '##ed': 12, cafe: 13, '!': 14, the: 15, '猫': 16 };

function tokenizerJson(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      { id: 0, content: '<s>', special: true },
      { id: 1, content: '<pad>', special: true },
      { id: 2, content: '</s>', special: true },
      { id: 3, content: '[UNK]', special: true },
    ],
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
      pair: [],
      special_tokens: { '<s>': { id: '<s>', ids: [0], tokens: ['<s>'] }, '</s>': { id: '</s>', ids: [2], tokens: ['</s>'] } },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab: VOCAB },
    ...overrides,
  };
}

describe('WordPiece tokenizer (tokenizer.json)', () => {
  const tok = wordPieceFromTokenizerJson(tokenizerJson());

  it('normalises like BertNormalizer: control chars dropped, whitespace unified, accents stripped, lowercase, CJK padded', () => {
    const n = { cleanText: true, handleChineseChars: true, stripAccents: true, lowercase: true };
    expect(bertNormalize('\u0000A\tRed\u00a0Café\ufffd', n)).toBe('a red cafe');
    expect(bertNormalize('猫Cat', n)).toBe(' 猫 cat');
    expect(bertNormalize('Café', { ...n, stripAccents: false, lowercase: false })).toBe('Café');
  });

  it('isolates punctuation and splits on whitespace', () => {
    expect(preTokenize('a red  cats, on the cafe!', 'bert')).toEqual(['a', 'red', 'cats', ',', 'on', 'the', 'cafe', '!']);
    expect(preTokenize("it's $5", 'bert')).toEqual(['it', "'", 's', '$', '5']);
    expect(preTokenize('a b\tc', 'whitespaceSplit')).toEqual(['a', 'b', 'c']);
  });

  it('encodes with greedy longest-match word pieces and the template specials', () => {
    expect(tok.encode('A red Cats, on the Café!').ids).toEqual([0, 4, 5, 6, 7, 9, 8, 15, 13, 14, 2]);
    expect(tok.encode('unwanted').ids).toEqual([0, 10, 11, 12, 2]);
    expect(tok.encode('dog cats!!').ids).toEqual([0, 3, 6, 7, 14, 14, 2]); // unknown word → [UNK]
    expect(tok.encode('unwantedx').ids).toEqual([0, 3, 2]); // one unknown piece makes the whole word [UNK]
    expect(tok.encode('猫cat').ids).toEqual([0, 16, 6, 2]);
    expect(tok.encode('a <s> red').ids).toEqual([0, 4, 0, 5, 2]); // added tokens match verbatim
    expect(tok.encode('').ids).toEqual([0, 2]);
  });

  it('truncates to maxLength including the specials and pads a batch to its longest row', () => {
    expect(tok.encode('a red cat', 4)).toEqual({ ids: [0, 4, 5, 2], truncated: true });
    const b = tok.encodeBatch(['a', 'a red cat']);
    expect(b.length).toBe(5);
    expect(Array.from(b.inputIds)).toEqual([0, 4, 2, 1, 1, 0, 4, 5, 6, 2]);
    expect(Array.from(b.attentionMask)).toEqual([1, 1, 1, 0, 0, 1, 1, 1, 1, 1]);
    expect(b.truncated).toBe(0);
  });

  it('supports Bert/Roberta post-processors, max_input_chars_per_word and an explicit pad id', () => {
    const bert = wordPieceFromTokenizerJson(tokenizerJson({ post_processor: { type: 'BertProcessing', cls: ['<s>', 0], sep: ['</s>', 2] }, padding: { pad_id: 1, pad_token: '<pad>' } }));
    expect(bert.encode('red').ids).toEqual([0, 5, 2]);
    const short = wordPieceFromTokenizerJson(tokenizerJson({ model: { type: 'WordPiece', unk_token: '[UNK]', max_input_chars_per_word: 5, vocab: VOCAB } }));
    expect(short.encode('unwanted').ids).toEqual([0, 3, 2]);
    expect(wordPieceFromTokenizerJson(tokenizerJson({ post_processor: null })).encode('red').ids).toEqual([5]);
  });

  it('rejects unsupported components with the field name', () => {
    expect(() => wordPieceFromTokenizerJson(tokenizerJson({ model: { type: 'BPE', vocab: {}, merges: [] } }))).toThrow(ConfigError);
    expect(() => wordPieceFromTokenizerJson(tokenizerJson({ normalizer: { type: 'NFKC' } }))).toThrow(/normalizer\.type/);
    expect(() => wordPieceFromTokenizerJson(tokenizerJson({ pre_tokenizer: { type: 'Metaspace' } }))).toThrow(/pre_tokenizer\.type/);
  });

  it('loads a folder: model_max_length from tokenizer_config.json, clear error when tokenizer.json is missing', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wordpiece-'));
    try {
      expect(() => loadWordPieceTokenizer(dir)).toThrow(InputError);
      expect(() => loadWordPieceTokenizer(dir)).toThrow(/tokenizer\.json/);
      fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson()));
      fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 3 }));
      expect(loadWordPieceTokenizer(dir).encode('red cat').ids).toEqual([0, 5, 2]);
      fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 1e30 }));
      expect(loadWordPieceTokenizer(dir).data.maxLength).toBe(512);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
