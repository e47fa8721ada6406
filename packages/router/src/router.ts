import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, InputError, Rng, ShapeError } from '@aptp/core';
import type { ArchitectureLayout } from '@aptp/unet-gating';
import { hardGates } from '@aptp/unet-gating';
import { ArchitectureCodebook } from './codebook';
import { RouterConfig, RouterConfigInput, gumbelOptions, parseRouterConfig } from './config';
import { depthOrderMod, evalGumbelNoise, gumbelSigmoid, withoutGradient } from './gumbel';
import { OrtMatMul, fastRoutingScores } from './fastRoute';
import { widthDepthNormalize } from './normalize';
import { ArchitecturePredictor } from './predictor';
import { BalancedRoutingOptions, argmaxAssignment, balancedExpertAssignment, oneHotRows, routingScores, selectCodes, sinkhornPlan } from './routing';

/**
 * The APTP prompt router (APTP.md §2): architecture predictor + architecture codebook + Gumbel-sigmoid + routing,
 * for one gate layout. Training forward with the two-phase gradient semantics of §2.6, reference inference routing
 * (cosine argmax, eval-mode noise) and capacity-aware balanced routing.
 */

/** Gumbel noise of one training step, `[R, L]` each in the golden layout (see `gumbel.ts`). */
export interface RouterTrainNoise {
  /** Noise of the code sample C = GS(codes) (reference: drawn first, `quantizer_codebook`). `[K, L]`. */
  codebook: tf.Tensor2D;
  /** Noise of the prompt side of the assignment, A = GS(e) (`quantizer_z`). `[B, L]`. */
  assignment: tf.Tensor2D;
  /** Noise of the predictor's own soft gates s = GS(e) (`step_z`), used for the contrastive loss and in pretraining. `[B, L]`. */
  step: tf.Tensor2D;
}

/**
 * `pretrain`: the first `hypernet_pretraining_steps` (500) steps — the UNet is gated by the predictor's own soft gates
 * s, so every loss trains the predictor and the codebook gets no gradient. `main`: the UNet is gated by the assigned
 * codes' soft samples C[idx] — the codebook gets the UNet/resource gradients, the predictor only the contrastive one.
 */
export type RouterPhase = 'pretrain' | 'main';

/** Everything one training forward produces (the caller owns every tensor). */
export interface RouterTrainOutputs {
  /** `[B, L]` predictor logits e. */
  logits: tf.Tensor2D;
  /** `[K, L]` this step's soft code sample C (differentiable w.r.t. the code logits); becomes `embeddingGs`. */
  codeSamples: tf.Tensor2D;
  /** `[B, L]` A = GS(e) with the assignment noise (no gradient). */
  assignmentGates: tf.Tensor2D;
  /** `[B, K]` cosine similarities of N(A) and N(C) (no gradient). */
  assignmentScores: tf.Tensor2D;
  /** `[B, K]` Sinkhorn plan (or the scores when `optimalTransport` is off) (no gradient). */
  assignmentPlan: tf.Tensor2D;
  /** `[B]` int32 code index of every prompt. */
  assignment: tf.Tensor1D;
  /** `[B, L]` C[idx]: the assigned soft code samples (gradient → code logits only). */
  archVectorQuantized: tf.Tensor2D;
  /** `[B, L]` s = GS(e) with the step noise (gradient → predictor). */
  archVector: tf.Tensor2D;
  /** `[B, L]` N(s): the contrastive loss's architecture vectors. */
  archVectorNormalized: tf.Tensor2D;
  /** `[B, L]` the UNet gates: s in `pretrain`, C[idx] in `main`. */
  gates: tf.Tensor2D;
}

export type EvalNoise = 'reference' | 'none' | tf.Tensor2D;

export interface RouteOptions {
  /**
   * `cosine` (reference): argmax of the cosine similarity per prompt. `balanced`: the best assignment of the whole
   * batch under per-expert capacities (optimal transport).
   */
  mode?: 'cosine' | 'balanced';
  /** Capacities for `balanced` (default ⌈B/K⌉ per expert). */
  capacities?: BalancedRoutingOptions['capacities'];
  /**
   * Prompt-side Gumbel noise: `reference` (default) = the reference's fixed eval stream, row position taken modulo
   * `evalBatchSize` as when the reference routes in batches; `none` = zero noise (position-independent); or an
   * explicit `[B, L]` tensor.
   */
  noise?: EvalNoise;
  /**
   * `ort` (default): predictor and cosine matmuls on onnxruntime, gate math on host arrays (`fastRoute.ts`; 10k
   * prompts in well under a second). `tfjs`: the tensor path of {@link PromptRouter.scores}. Same semantics; the ids
   * agree except where two scores tie within float32 rounding.
   */
  engine?: 'ort' | 'tfjs';
}

export interface RouteResult {
  /** Expert (code) id per prompt. */
  expert: Int32Array;
  /** `[B, K]` cosine similarities, row-major. */
  scores: Float32Array;
  /** Prompts per expert. */
  counts: Int32Array;
}

export class PromptRouter {
  readonly config: RouterConfig;
  readonly layout: ArchitectureLayout;
  readonly predictor: ArchitecturePredictor;
  readonly codebook: ArchitectureCodebook;
  private evalNoiseCache: Float32Array | null = null;
  /** The onnxruntime session of the `ort` routing engine: created by the first such route, released by dispose(). */
  private matmul: OrtMatMul | null = null;
  private disposed = false;
  private released: Promise<void> = Promise.resolve();

  constructor(config: RouterConfig, layout: ArchitectureLayout, predictor: ArchitecturePredictor, codebook: ArchitectureCodebook) {
    depthOrderMod(config.depthOrder, layout.depthEntries); // validates depth_order against the layout
    if (predictor.layout !== layout || codebook.layout !== layout) {
      throw new ConfigError('predictor, codebook and router must share one layout object', { field: 'layout' });
    }
    if (predictor.inputDim !== config.inputDim) throw new ConfigError('predictor input width differs from the config', { field: 'inputDim', expected: config.inputDim, found: predictor.inputDim });
    if (codebook.numCodes !== config.numCodes) throw new ConfigError('codebook size differs from the config', { field: 'numCodes', expected: config.numCodes, found: codebook.numCodes });
    this.config = config;
    this.layout = layout;
    this.predictor = predictor;
    this.codebook = codebook;
  }

  /** A freshly initialised router (reference init: orthogonal heads and codes, zero bias) from a seed. */
  static init(layout: ArchitectureLayout, config: RouterConfigInput = {}, seed = 43): PromptRouter {
    const cfg = parseRouterConfig(config);
    const predictor = ArchitecturePredictor.init(layout, { inputDim: cfg.inputDim, linearBias: cfg.linearBias, singleArchParam: cfg.singleArchParam }, Rng.forKey(seed, 'router', 'predictor'));
    const codebook = ArchitectureCodebook.init(layout, cfg.numCodes, Rng.forKey(seed, 'router', 'codebook'));
    return new PromptRouter(cfg, layout, predictor, codebook);
  }

  get numCodes(): number {
    return this.config.numCodes;
  }

  /** Trainable variables: predictor then codebook. */
  variables(): tf.Variable[] {
    return [...this.predictor.variables(), ...this.codebook.variables()];
  }

  /** Soft Gumbel-sigmoid gates of logits `[R, L]` with noise `[R, L]` (config temperature/base/rules). */
  gumbel(logits: tf.Tensor2D, noise: tf.Tensor2D): tf.Tensor2D {
    return gumbelSigmoid(logits, noise, this.layout, gumbelOptions(this.config));
  }

  /** N(s) (`width_depth_normalize`). */
  normalize(gates: tf.Tensor2D): tf.Tensor2D {
    return widthDepthNormalize(gates, this.layout);
  }

  /**
   * One training-mode forward (reference `Pruner.step` router part + `StructureVectorQuantizer.forward` in train mode):
   * 1. e = predictor(x); 2. C = GS(codes; noise.codebook); 3. A = GS(e; noise.assignment), no gradient;
   * 4. S = cos(N(A), N(C)); Q = Sinkhorn(S) (or S); idx = argmax Q; 5. C[idx]; 6. s = GS(e; noise.step), N(s);
   * 7. gates = s (pretrain) or C[idx] (main).
   * Pure: call `codebook.setEmbeddingGs(out.codeSamples)` after the step, as the reference overwrites `embedding_gs`.
   */
  trainForward(x: tf.Tensor2D, noise: RouterTrainNoise, phase: RouterPhase): RouterTrainOutputs {
    this.live();
    if (phase !== 'pretrain' && phase !== 'main') throw new ConfigError('unknown router phase', { field: 'phase', expected: 'pretrain | main', found: phase });
    const B = x.shape[0];
    const K = this.numCodes;
    const L = this.layout.vectorLength;
    checkShape(noise.codebook, [K, L], 'noise.codebook');
    checkShape(noise.assignment, [B, L], 'noise.assignment');
    checkShape(noise.step, [B, L], 'noise.step');
    const opts = gumbelOptions(this.config);
    return tf.tidy(() => {
      const logits = this.predictor.forward(x);
      const codeSamples = this.codebook.sample(noise.codebook, opts);
      // Assignment under torch.no_grad() in the reference: untaped, no gradient.
      const packed = withoutGradient([logits, codeSamples, noise.assignment], (e, c, n) => {
        const a = gumbelSigmoid(e as tf.Tensor2D, n as tf.Tensor2D, this.layout, opts);
        const rs = routingScores(a, c as tf.Tensor2D, this.layout);
        const plan = this.config.optimalTransport
          ? sinkhornPlan(rs.scores, { epsilon: this.config.sinkhornEpsilon, iterations: this.config.sinkhornIterations })
          : tf.clone(rs.scores);
        return tf.concat([a, rs.scores, plan, oneHotRows(argmaxAssignment(plan), K)], 1); // [B, L + 3K]
      });
      const assignmentGates = tf.slice(packed, [0, 0], [B, L]) as tf.Tensor2D;
      const assignmentScores = tf.slice(packed, [0, L], [B, K]) as tf.Tensor2D;
      const assignmentPlan = tf.slice(packed, [0, L + K], [B, K]) as tf.Tensor2D;
      const oneHot = tf.slice(packed, [0, L + 2 * K], [B, K]) as tf.Tensor2D;
      const assignment = tf.argMax(oneHot, 1) as tf.Tensor1D;
      const archVectorQuantized = tf.matMul(oneHot, codeSamples) as tf.Tensor2D; // C[idx], gradient → codes only
      const archVector = gumbelSigmoid(logits, noise.step, this.layout, opts);
      const archVectorNormalized = widthDepthNormalize(archVector, this.layout);
      const gates = phase === 'pretrain' ? tf.clone(archVector) : tf.clone(archVectorQuantized);
      return {
        logits,
        codeSamples,
        assignmentGates,
        assignmentScores,
        assignmentPlan,
        assignment,
        archVectorQuantized,
        archVector,
        archVectorNormalized,
        gates,
      };
    }) as unknown as RouterTrainOutputs;
  }

  /** `[B, L]` eval-mode prompt noise for `rows` prompts (reference stream, position modulo `evalBatchSize`). */
  evalNoise(rows: number, kind: Exclude<EvalNoise, tf.Tensor2D> = 'reference'): tf.Tensor2D {
    const L = this.layout.vectorLength;
    if (kind === 'none') return tf.zeros([rows, L]) as tf.Tensor2D;
    return tf.tensor2d(this.evalNoiseHost(rows).slice(), [rows, L]);
  }

  /**
   * Eval-mode cosine similarities `[B, K]` of prompt embeddings `[B, inputDim]` against the stored code samples
   * (`embeddingGs`): cos(N(GS_eval(e)), N(embeddingGs)).
   */
  scores(x: tf.Tensor2D, noise: EvalNoise = 'reference'): tf.Tensor2D {
    this.live();
    const B = x.shape[0];
    return tf.tidy(() => {
      const logits = this.predictor.forward(x);
      const n = noise instanceof tf.Tensor ? noise : this.evalNoise(B, noise);
      checkShape(n, [B, this.layout.vectorLength], 'noise');
      const gates = this.gumbel(logits, n);
      return routingScores(gates, this.codebook.embeddingGs, this.layout).scores;
    });
  }

  /** Routes prompt embeddings `[B, inputDim]` to experts (reference cosine argmax, or capacity-aware balanced). */
  async route(x: tf.Tensor2D, options: RouteOptions = {}): Promise<RouteResult> {
    const mode = options.mode ?? 'cosine';
    if (mode !== 'cosine' && mode !== 'balanced') throw new ConfigError('unknown routing mode', { field: 'mode', expected: 'cosine | balanced', found: mode });
    const engine = options.engine ?? 'ort';
    if (engine !== 'ort' && engine !== 'tfjs') throw new ConfigError('unknown routing engine', { field: 'engine', expected: 'ort | tfjs', found: engine });
    let scores: Float32Array;
    if (engine === 'ort') {
      scores = await this.fastScores(x, options.noise ?? 'reference');
    } else {
      const s = this.scores(x, options.noise ?? 'reference');
      try {
        scores = (await s.data()) as Float32Array;
      } finally {
        s.dispose();
      }
    }
    return routeFromScores(scores, x.shape[0], this.numCodes, { mode, capacities: options.capacities });
  }

  /** `[B, K]` host scores of {@link scores} computed by the onnxruntime + host-loop path (`fastRoute.ts`). */
  private async fastScores(x: tf.Tensor2D, noise: EvalNoise): Promise<Float32Array> {
    this.live();
    const B = x.shape[0];
    const L = this.layout.vectorLength;
    if (x.rank !== 2 || x.shape[1] !== this.predictor.inputDim) {
      throw new ShapeError('wrong prompt-embedding shape', { field: 'x', expected: `[B, ${this.predictor.inputDim}]`, found: x.shape });
    }
    let noiseData: Float32Array | null = null;
    let noiseRows = B;
    if (noise instanceof tf.Tensor) {
      checkShape(noise, [B, L], 'noise');
      noiseData = (await noise.data()) as Float32Array;
    } else if (noise === 'reference') {
      // The reference stream repeats every evalBatchSize rows: pass one period, not a [B, L] copy.
      noiseRows = Math.min(B, this.config.evalBatchSize);
      noiseData = this.evalNoiseHost(noiseRows);
    } else if (noise !== 'none') {
      throw new ConfigError('unknown eval noise', { field: 'noise', expected: 'reference | none | [B, L] tensor', found: noise });
    }
    if (B === 0) return new Float32Array(0);
    const p = this.predictor;
    const [xd, w, b, arch, codes] = await Promise.all([
      x.data() as Promise<Float32Array>,
      p.weight ? (p.weight.data() as Promise<Float32Array>) : null,
      p.bias ? (p.bias.data() as Promise<Float32Array>) : null,
      p.arch ? (p.arch.data() as Promise<Float32Array>) : null,
      this.codebook.embeddingGs.data() as Promise<Float32Array>,
    ]);
    this.live(); // disposed while reading: do not create a session nobody will release
    const matmul = (this.matmul ??= new OrtMatMul());
    return fastRoutingScores({
      x: xd,
      batch: B,
      inputDim: p.inputDim,
      weight: w,
      bias: b,
      arch,
      noise: noiseData,
      noiseRows,
      codeGates: codes,
      numCodes: this.numCodes,
      layout: this.layout,
      gumbel: gumbelOptions(this.config),
      matmul,
    });
  }

  /** Host copy of {@link evalNoise}(rows, 'reference'). */
  private evalNoiseHost(rows: number): Float32Array {
    const L = this.layout.vectorLength;
    const period = this.config.evalBatchSize;
    if (!this.evalNoiseCache) this.evalNoiseCache = evalGumbelNoise(period, this.layout);
    if (rows <= period) return this.evalNoiseCache.subarray(0, rows * L); // read-only view of the cache
    const out = new Float32Array(rows * L);
    for (let start = 0; start < rows; start += period) {
      const n = Math.min(period, rows - start);
      out.set(this.evalNoiseCache.subarray(0, n * L), start * L);
    }
    return out;
  }

  /** `[B, L]` hard gates of the chosen experts: hard(embeddingGs[expert]) (the reference's eval-mode output). */
  expertGates(expert: ArrayLike<number>): tf.Tensor2D {
    this.live();
    const K = this.numCodes;
    for (let i = 0; i < expert.length; i++) {
      if (!(Number.isInteger(expert[i]) && expert[i]! >= 0 && expert[i]! < K)) throw new InputError('expert id out of range', { field: `expert[${i}]`, expected: `0..${K - 1}`, found: expert[i] });
    }
    return tf.tidy(() => hardGates(selectCodes(this.codebook.embeddingGs, tf.tensor1d(Int32Array.from(expert), 'int32'))));
  }

  /**
   * Frees the tensors (at once) and the onnxruntime session of the `ort` engine (after routes in flight finish; the
   * returned promise resolves then). Idempotent; any use afterwards is an `E_DISPOSED` error.
   */
  dispose(): Promise<void> {
    if (!this.disposed) {
      this.disposed = true;
      this.predictor.dispose();
      this.codebook.dispose();
      this.released = this.matmul?.dispose() ?? Promise.resolve();
      this.matmul = null;
    }
    return this.released;
  }

  private live(): void {
    if (this.disposed) throw new InputError('PromptRouter used after dispose()', { code: 'E_DISPOSED' });
  }
}

/** Expert ids from host scores `[B, K]`: argmax per row (`cosine`) or the capacity-constrained optimum (`balanced`). */
export function routeFromScores(scores: Float32Array, batch: number, numCodes: number, options: { mode?: 'cosine' | 'balanced'; capacities?: BalancedRoutingOptions['capacities'] } = {}): RouteResult {
  if (scores.length !== batch * numCodes) throw new ShapeError('scores have the wrong size', { field: 'scores', expected: batch * numCodes, found: scores.length });
  if ((options.mode ?? 'cosine') === 'balanced') {
    const r = balancedExpertAssignment(scores, batch, numCodes, { capacities: options.capacities });
    return { expert: r.expert, scores, counts: r.counts };
  }
  const expert = new Int32Array(batch);
  const counts = new Int32Array(numCodes);
  for (let b = 0; b < batch; b++) {
    let best = 0;
    for (let k = 1; k < numCodes; k++) if (scores[b * numCodes + k]! > scores[b * numCodes + best]!) best = k;
    expert[b] = best;
    counts[best] = counts[best]! + 1;
  }
  return { expert, scores, counts };
}

function checkShape(t: tf.Tensor, shape: number[], field: string): void {
  if (t.rank !== shape.length || t.shape.some((d, i) => d !== shape[i])) throw new ShapeError('wrong shape', { field, expected: shape, found: t.shape });
}
