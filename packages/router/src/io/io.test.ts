import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, HostTensor, InputError, readSafetensors, writeSafetensors } from '@aptp/core';
import { describeGolden, expectClose, readGoldenJson } from '@aptp/core/testing';
import { architectureLayout, readUNetConfig } from '@aptp/unet-gating';
import { PromptRouter } from '../router';
import { tinyLayout } from '../testLayout';
import { loadAptpRouter, loadRouter, saveRouter } from './aptpModel';
import { loadReferenceRouter, saveReferenceRouter } from './reference';

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'router-io-'));
}

function expectSameTensors(a: Map<string, HostTensor>, b: Map<string, HostTensor>): void {
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  for (const [k, v] of a) {
    expect(b.get(k)!.shape).toEqual(v.shape);
    expect(Array.from(b.get(k)!.data as Float32Array)).toEqual(Array.from(v.data as Float32Array));
  }
}

describeGolden('aptp/router', 'router save/load (golden aptp/router = released APTP layout)', (dir) => {
  const layout = architectureLayout(readUNetConfig(path.join(dir, '..', 'config.json')));
  const x = () => tf.tensor2d(readSafetensors(path.join(dir, 'router_io.safetensors'), ['x']).get('x')!.data as Float32Array, [6, 24]);

  it('writes the released layout back bit for bit (tensors and reference config keys)', () => {
    const out = tmpDir();
    const router = loadReferenceRouter(dir, { layout });
    try {
      saveReferenceRouter(router, out);
      for (const sub of ['hypernet', 'quantizer']) {
        expectSameTensors(readSafetensors(path.join(dir, sub, 'diffusion_pytorch_model.safetensors')), readSafetensors(path.join(out, sub, 'diffusion_pytorch_model.safetensors')));
        const ref = readGoldenJson<Record<string, unknown>>(path.join(dir, sub, 'config.json'));
        const ours = readGoldenJson<Record<string, unknown>>(path.join(out, sub, 'config.json'));
        for (const [k, v] of Object.entries(ref)) if (!k.startsWith('_')) expect({ [k]: ours[k] }).toEqual({ [k]: v });
      }
      const again = loadReferenceRouter(out, { layout });
      expect(again.config).toEqual(router.config);
      again.dispose();
    } finally {
      router.dispose();
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  it('our format round-trips; a model folder loads router/ or hypernet/ + quantizer/ with the layout from unet/config.json', async () => {
    const model = tmpDir();
    const router = loadReferenceRouter(dir, { layout });
    const input = x();
    try {
      saveRouter(router, path.join(model, 'router'));
      fs.mkdirSync(path.join(model, 'unet'));
      fs.copyFileSync(path.join(dir, '..', 'config.json'), path.join(model, 'unet', 'config.json'));
      const ours = loadAptpRouter(model);
      const expected = await router.route(input);
      expect(Array.from((await ours.route(input)).scores)).toEqual(Array.from(expected.scores));
      expect(ours.config).toEqual(router.config);
      ours.dispose();
      fs.rmSync(path.join(model, 'router'), { recursive: true });
      for (const sub of ['hypernet', 'quantizer']) fs.cpSync(path.join(dir, sub), path.join(model, sub), { recursive: true });
      const released = loadAptpRouter(model);
      expect(Array.from((await released.route(input)).expert)).toEqual(Array.from(expected.expert));
      released.dispose();
    } finally {
      input.dispose();
      router.dispose();
      fs.rmSync(model, { recursive: true, force: true });
    }
  });

  it('folds weight-normalised heads (wn_flag: true) into plain weights', () => {
    const out = tmpDir();
    try {
      fs.cpSync(dir, out, { recursive: true });
      const w = readSafetensors(path.join(dir, 'hypernet', 'diffusion_pytorch_model.safetensors'));
      const wn: Record<string, HostTensor> = {};
      for (const [k, v] of w) {
        if (!k.endsWith('.weight')) {
          wn[k] = v;
          continue;
        }
        const [rows, cols] = v.shape as [number, number];
        const g = new Float32Array(rows);
        for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) g[r] += (v.data as Float32Array)[r * cols + c]! ** 2;
        const base = k.slice(0, -'.weight'.length);
        wn[`${base}.parametrizations.weight.original0`] = { dtype: 'float32', shape: [rows, 1], data: g.map(Math.sqrt) };
        wn[`${base}.parametrizations.weight.original1`] = { dtype: 'float32', shape: [rows, cols], data: (v.data as Float32Array).map((a) => 3 * a) };
      }
      writeSafetensors(path.join(out, 'hypernet', 'diffusion_pytorch_model.safetensors'), wn);
      const cfgFile = path.join(out, 'hypernet', 'config.json');
      fs.writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgFile, 'utf8')), wn_flag: true }));
      const a = loadReferenceRouter(dir, { layout });
      const b = loadReferenceRouter(out, { layout });
      const input = x();
      const [ea, eb] = [a.predictor.forward(input), b.predictor.forward(input)];
      expectClose(eb, ea.dataSync(), { name: 'e with folded weight norm', rtol: 1e-6 });
      tf.dispose([ea, eb, input]);
      a.dispose();
      b.dispose();
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  it('errors name the file and field: missing files, unknown keys, unsupported values, wrong structure', () => {
    const out = tmpDir();
    try {
      fs.cpSync(path.join(dir, 'hypernet'), path.join(out, 'hypernet'), { recursive: true });
      expect(() => loadReferenceRouter(out, { layout })).toThrow(/missing quantizer\/config\.json, quantizer\/diffusion_pytorch_model\.safetensors/);
      fs.cpSync(path.join(dir, 'quantizer'), path.join(out, 'quantizer'), { recursive: true });
      const qFile = path.join(out, 'quantizer', 'config.json');
      const q = JSON.parse(fs.readFileSync(qFile, 'utf8'));
      fs.writeFileSync(qFile, JSON.stringify({ ...q, resource_aware_normalization: true }));
      expect(() => loadReferenceRouter(out, { layout })).toThrow(/resource_aware_normalization/);
      fs.writeFileSync(qFile, JSON.stringify({ ...q, mystery: 1 }));
      expect(() => loadReferenceRouter(out, { layout })).toThrow(ConfigError);
      expect(() => loadReferenceRouter(out, { layout })).toThrow(/mystery/);
      fs.writeFileSync(qFile, JSON.stringify({ ...q, structure: { ...q.structure, depth: q.structure.depth.map(() => [0]) } }));
      expect(() => loadReferenceRouter(out, { layout })).toThrow(/structure/);
      expect(() => loadAptpRouter(out)).toThrow(InputError); // no unet/config.json
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});

describe('router save/load (our format)', () => {
  it('round-trips a freshly initialised router and rejects unknown config keys', () => {
    const layout = tinyLayout();
    const out = tmpDir();
    const router = PromptRouter.init(layout, { inputDim: 16, numCodes: 5, evalBatchSize: 64 }, 3);
    try {
      saveRouter(router, out);
      const back = loadRouter(out, { layout });
      expect(back.config).toEqual(router.config);
      expectSameTensors(new Map(Object.entries(router.predictor.referenceTensors())), new Map(Object.entries(back.predictor.referenceTensors())));
      expectSameTensors(new Map(Object.entries(router.codebook.referenceTensors())), new Map(Object.entries(back.codebook.referenceTensors())));
      back.dispose();
      const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
      fs.writeFileSync(path.join(out, 'config.json'), JSON.stringify({ ...cfg, config: { ...cfg.config, tempreature: 1 } }));
      expect(() => loadRouter(out, { layout })).toThrow(/tempreature/);
    } finally {
      router.dispose();
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});
