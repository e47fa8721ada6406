import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError } from '@aptp/core';
import { openSource, parseDataLoaderConfig, parseDatasetConfig, resolveTransform } from './config';
import { solidImage, tempDir } from './fixtures';

function errorOf(f: () => unknown): ConfigError {
  try {
    f();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('expected a ConfigError');
}

describe('data set configs', () => {
  it('fills reference defaults', () => {
    expect(parseDatasetConfig({ format: 'cc3m', root: '/data/cc3m' })).toEqual({ format: 'cc3m', root: '/data/cc3m', split: 'train' });
    expect(parseDatasetConfig({ format: 'synthetic' })).toMatchObject({ seed: 0, split: 'train', imageSize: 32, validationFraction: 0.1 });
    expect(parseDatasetConfig({ format: 'coco30k', root: 'coco' })).toMatchObject({ selectionFile: 'annotations/captions_val2014_30k.json', imagesDir: 'images/val2014' });
    const loader = parseDataLoaderConfig({});
    expect(loader).toMatchObject({ seed: 43, shuffle: true, transform: 'train', resolution: 256 });
    expect(resolveTransform(loader)).toEqual({ resolution: 256, resize: 'shorterSide', crop: 'random', flip: true, interpolation: 'bilinear' });
    expect(resolveTransform(parseDataLoaderConfig({ transform: 'eval', resolution: 64 }))).toMatchObject({ resolution: 64, crop: 'random', flip: false });
  });

  it('names the file and field of a bad value, an unknown key and an unknown format', () => {
    const bad = errorOf(() => parseDatasetConfig({ format: 'cc3m', root: 5 }, 'configs/data.yaml'));
    expect(bad.file).toBe('configs/data.yaml');
    expect(bad.field).toBe('root');
    expect(bad.message).toMatch(/^configs\/data\.yaml: root: .*string/);

    const unknown = errorOf(() => parseDatasetConfig({ format: 'imageFolder', root: 'x', captions: 'c.jsonl', captionKey: 'text' }, 'd.json'));
    expect(unknown.message).toBe('d.json: captionKey: unknown key');

    const format = errorOf(() => parseDatasetConfig({ format: 'laion', root: 'x' }));
    expect(format.field).toBe('format');


    const nested = errorOf(() => parseDatasetConfig({ format: 'synthetic', categoryWeights: { shape: 1, count: 1, relation: 1, text: -1 } }));
    expect(nested.field).toBe('categoryWeights.text');

    const transform = errorOf(() => parseDataLoaderConfig({ transform: { resolution: 64, crop: 'middle' } }, 'loader.json'));
    expect(transform.message).toBe('loader.json: transform.crop: Invalid option: expected one of "random"|"center"|"none"');
  });

  it('opens each format through one entry point', async () => {
    const root = tempDir();
    fs.writeFileSync(path.join(root, 'a.png'), await solidImage([1, 2, 3], 4, 4, 'png'));
    fs.writeFileSync(path.join(root, 'caps.jsonl'), `${JSON.stringify({ file: 'a.png', caption: 'hi' })}\n`);
    const folder = await openSource({ format: 'imageFolder', root, captions: 'caps.jsonl' });
    expect(folder.kind === 'indexed' && folder.length).toBe(1);
    const synthetic = await openSource({ format: 'synthetic', numSamples: 5, split: 'validation' });
    expect(synthetic.name).toBe('synthetic/validation');
    await expect(openSource({ format: 'webdataset', shards: path.join(root, 'none.tar') })).rejects.toThrow(/none\.tar/);
  });
});
