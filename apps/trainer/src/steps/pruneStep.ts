import * as tf from '@tensorflow/tfjs-core';
import { DDPMScheduler, ShapeError } from '@aptp/core';
import {
  blockDistillationLoss,
  contrastiveLoss,
  diffusionLoss,
  distillationLoss,
  LOSS_TERMS,
  lossWeights,
  maxLoss,
  minSnrWeights,
  objective,
  resourceLoss,
  snrFromAlphasCumprod,
  stdLoss,
  type LossesConfig,
  type LossTerm,
} from '@aptp/losses';
import type { PromptRouter, RouterPhase, RouterTrainNoise } from '@aptp/router';
import { resourceRatios, type GatePlacement, type MacsModel, type UNet2DConditionModel } from '@aptp/unet-gating';
import type { AdamW } from '../optim/adamW';

/**
 * One APTP pruning-stage step (APTP.md §2.6, §5 "Pruning-stage total", §12 item 5; reference `Pruner.step`):
 *
 * 1. x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε; target v = √ᾱ_t·ε − √(1−ᾱ_t)·x0 (or ε, by the scheduler's prediction type).
 * 2. Teacher: the frozen UNet with all gates 1 (= the plain forward), no gradient → output and the 9 block outputs.
 * 3. Router training forward (`PromptRouter.trainForward`): predictor logits e, code sample C, Sinkhorn (or cosine)
 *    assignment idx, s = GS(e); UNet gates = s (`pretrain`, the first `hypernetPretrainingSteps`) or C[idx] (`main`).
 * 4. Student: the same UNet with those gates → output and block outputs.
 * 5. L = w_ddpm·L_ddpm(min-SNR) + w_res·|log(r̄/p')| + w_cont·L_cont(prompt, N(s)) + w_dist·L_distill + w_block·L_block
 *    + w_std·(−std r) + w_max·(1 − max r), with r_b = current prunable MACs(gates_b)/D (straight-through).
 * 6. Gradients w.r.t. the router only (predictor + code logits; the UNet is frozen); AdamW; embedding_gs ← C.
 *
 * Who gets which gradient follows from the router's forward (§2.6): in `pretrain` every term trains the predictor and
 * the codes get none; in `main` the codes get the UNet/resource terms and the predictor only the contrastive term.
 */

/** The frozen models and settings of the pruning stage. */
export interface PruneStepModel {
  /** The teacher UNet (frozen weights), run gated for the student and ungated for the teacher. */
  unet: UNet2DConditionModel<tf.Tensor>;
  router: PromptRouter;
  /** The training noise schedule (SD 2.1: scaled-linear betas, v-prediction). */
  scheduler: DDPMScheduler;
  /** MACs model at the training resolution (APTP.md §4). */
  macs: MacsModel;
  /** p' = 1 − (1 − p)·T/D (APTP.md §4.3). */
  pPrime: number;
  losses: LossesConfig;
  /** ResNet gate placement (default `reference`). */
  placement?: GatePlacement;
}

/** One batch with all of its randomness drawn by the caller (so the step is a pure function of its inputs). */
export interface PruneBatch {
  /** Clean samples x0 `[B, C, H, W]` (latents, or pixels for a pixel-space teacher). */
  x0: tf.Tensor4D;
  /** ε `[B, C, H, W]`. */
  noise: tf.Tensor4D;
  /** Integer timesteps `[B]`. */
  timesteps: ArrayLike<number>;
  /** Text conditioning `[B, S, cross_attention_dim]`. */
  encoderHiddenStates: tf.Tensor3D;
  /** Router input: prompt embeddings `[B, d]`. */
  promptEmbeddings: tf.Tensor2D;
  /** Gumbel noise of the codes, the assignment and the step gates (golden layout, `@aptp/router`). */
  gumbel: RouterTrainNoise;
}

/** Unweighted loss terms, plus the total. */
export type PruneLossValues = { total: number } & Record<LossTerm, number>;

/** Everything a step computes, as tensors (the caller owns them; `disposePruneStepOutput`). */
export interface PruneStepOutput {
  /** The weighted total (the value that was differentiated). */
  loss: tf.Scalar;
  /** Unweighted terms (`diffusion`, `resource`, `contrastive`, `distillation`, `block`, `std`, `max`). */
  terms: Record<LossTerm, tf.Scalar>;
  /** `[B]` r_b = current prunable MACs / D of the student gates. */
  ratios: tf.Tensor1D;
  /** `[B]` int32 code index of every prompt. */
  assignment: tf.Tensor1D;
  /** `[K, L]` this step's code sample C (the new `embedding_gs`). */
  codeSamples: tf.Tensor2D;
  /** `[B, L]` the student's gates. */
  gates: tf.Tensor2D;
  /** `[B, L]` N(s), the contrastive loss's architecture vectors. */
  archVectorNormalized: tf.Tensor2D;
  studentOut: tf.Tensor;
  teacherOut: tf.Tensor;
  /** Gradients keyed by {@link routerParams} names (parameters the loss does not reach are absent). */
  grads: Record<string, tf.Tensor>;
}

/** Scalar metrics of one applied step (metrics.jsonl). */
export interface PruneStepMetrics {
  loss: number;
  terms: Record<LossTerm, number>;
  ratios: number[];
  assignment: number[];
  /** Prompts per code in this batch. */
  codeUsage: number[];
}

/** The router's trainable variables under checkpoint names (predictor `hypernet.*`, codes `quantizer.*`). */
export function routerParams(router: PromptRouter): { hypernet: Record<string, tf.Variable>; quantizer: Record<string, tf.Variable> } {
  const p = router.predictor;
  const hypernet: Record<string, tf.Variable> = {};
  if (p.weight) hypernet['hypernet.weight'] = p.weight;
  if (p.bias) hypernet['hypernet.bias'] = p.bias;
  if (p.arch) hypernet['hypernet.arch'] = p.arch;
  return { hypernet, quantizer: { 'quantizer.embedding': router.codebook.embedding } };
}

/** UNet block outputs `down0…`, `mid`, `up0…` under the loss's keys `d0…`, `m`, `u0…`. */
export function blockKeys(blocks: Record<string, tf.Tensor>): Record<string, tf.Tensor> {
  const out: Record<string, tf.Tensor> = {};
  for (const [k, v] of Object.entries(blocks)) out[k === 'mid' ? 'm' : k.replace(/^down/, 'd').replace(/^up/, 'u')] = v;
  return out;
}

/** Min-SNR weights `[B]` for the scheduler's prediction type, or undefined for plain MSE (`snrGamma: null`). */
export function diffusionWeights(scheduler: DDPMScheduler, timesteps: ArrayLike<number>, snrGamma: number | null): Float32Array | undefined {
  if (snrGamma === null) return undefined;
  return minSnrWeights(snrFromAlphasCumprod(scheduler.alphasCumprod, timesteps), snrGamma, scheduler.config.predictionType);
}

function checkBatch(b: PruneBatch): number {
  const B = b.x0.shape[0];
  const rows: Array<[string, number]> = [
    ['noise', b.noise.shape[0]],
    ['timesteps', b.timesteps.length],
    ['encoderHiddenStates', b.encoderHiddenStates.shape[0]],
    ['promptEmbeddings', b.promptEmbeddings.shape[0]],
  ];
  for (const [field, n] of rows) if (n !== B) throw new ShapeError('every batch input needs one row per sample', { field, expected: B, found: n });
  return B;
}

/** Forward, losses and router gradients of one step; nothing is updated. The caller owns every returned tensor. */
export function pruneStepGradients(model: PruneStepModel, batch: PruneBatch, phase: RouterPhase): PruneStepOutput {
  checkBatch(batch);
  const { unet, router, scheduler, macs, pPrime, losses } = model;
  const placement = model.placement ?? 'reference';
  const t = Int32Array.from(batch.timesteps);
  const weights = diffusionWeights(scheduler, t, losses.diffusionLoss.snrGamma);
  // 1.–2. noisy input, target and the teacher: constants of the gradient.
  const fixed = tf.tidy(() => {
    const noisy = scheduler.addNoise(batch.x0, batch.noise, t);
    const target = scheduler.getTarget(batch.x0, batch.noise, t);
    const tt = tf.tensor1d(t, 'int32');
    const teacher = unet.forward({ sample: noisy, timestep: tt, encoderHiddenStates: batch.encoderHiddenStates });
    return { noisy, target, tt, teacherOut: teacher.sample, teacherBlocks: blockKeys(teacher.blocks) };
  });
  const { hypernet, quantizer } = routerParams(router);
  const params = { ...hypernet, ...quantizer };
  const kept: Partial<Omit<PruneStepOutput, 'loss' | 'grads' | 'teacherOut'>> = {};
  const names = Object.keys(params);
  try {
    const { value, grads } = tf.variableGrads(() => {
      // 3. router
      const r = router.trainForward(batch.promptEmbeddings, batch.gumbel, phase);
      // 4. student
      const student = unet.forward({ sample: fixed.noisy, timestep: fixed.tt, encoderHiddenStates: batch.encoderHiddenStates, gates: r.gates, placement });
      // 5. losses
      const ratios = resourceRatios(macs, r.gates);
      const terms: Record<LossTerm, tf.Scalar> = {
        diffusion: diffusionLoss(student.sample, fixed.target, weights),
        resource: resourceLoss(ratios, pPrime, losses.resourceLoss.type),
        contrastive: contrastiveLoss(batch.promptEmbeddings, r.archVectorNormalized, {
          archTemperature: losses.contrastiveLoss.archVectorTemperature,
          promptTemperature: losses.contrastiveLoss.promptEmbeddingTemperature,
        }),
        distillation: distillationLoss(student.sample, fixed.teacherOut),
        block: blockDistillationLoss(blockKeys(student.blocks), fixed.teacherBlocks),
        std: stdLoss(ratios),
        max: maxLoss(ratios),
      };
      const total = objective(terms, lossWeights(losses)).total;
      Object.assign(kept, {
        terms: Object.fromEntries(LOSS_TERMS.map((k) => [k, tf.keep(terms[k])])) as Record<LossTerm, tf.Scalar>,
        ratios: tf.keep(ratios),
        assignment: tf.keep(r.assignment),
        codeSamples: tf.keep(r.codeSamples),
        gates: tf.keep(r.gates),
        archVectorNormalized: tf.keep(r.archVectorNormalized),
        studentOut: tf.keep(student.sample),
      });
      return total;
    }, names.map((n) => params[n]!));
    const byVar = new Map(names.map((n) => [params[n]!.name, n]));
    const named: Record<string, tf.Tensor> = {};
    for (const [v, g] of Object.entries(grads)) named[byVar.get(v)!] = g;
    tf.dispose([fixed.noisy, fixed.target, fixed.tt, ...Object.values(fixed.teacherBlocks)]);
    return { ...(kept as Omit<PruneStepOutput, 'loss' | 'grads' | 'teacherOut'>), loss: value, grads: named, teacherOut: fixed.teacherOut };
  } catch (err) {
    tf.dispose([fixed.noisy, fixed.target, fixed.tt, fixed.teacherOut, ...Object.values(fixed.teacherBlocks)]);
    disposePruneStepOutput(kept as Partial<PruneStepOutput>);
    throw err;
  }
}

/** Frees every tensor of a step output (idempotent per tensor). */
export function disposePruneStepOutput(o: Partial<PruneStepOutput>): void {
  const ts: tf.Tensor[] = [];
  for (const v of [o.loss, o.ratios, o.assignment, o.codeSamples, o.gates, o.archVectorNormalized, o.studentOut, o.teacherOut]) if (v) ts.push(v);
  if (o.terms) ts.push(...Object.values(o.terms));
  if (o.grads) ts.push(...Object.values(o.grads));
  tf.dispose(ts.filter((t) => !t.isDisposed));
}

/**
 * One complete step: gradients, AdamW update of predictor and codes, `embedding_gs` ← this step's code sample, and the
 * step's numbers. A non-finite loss term skips the update (nothing changes) and is returned for the loop's NaN guard.
 */
export async function pruneStep(model: PruneStepModel, batch: PruneBatch, phase: RouterPhase, optimizer: AdamW): Promise<PruneStepMetrics> {
  const out = pruneStepGradients(model, batch, phase);
  try {
    const K = model.router.numCodes;
    const termValues = {} as Record<LossTerm, number>;
    for (const k of LOSS_TERMS) termValues[k] = (await out.terms[k].data())[0]!;
    const assignment = Array.from(await out.assignment.data());
    const codeUsage = new Array<number>(K).fill(0);
    for (const a of assignment) codeUsage[a] = codeUsage[a]! + 1;
    const metrics: PruneStepMetrics = {
      loss: (await out.loss.data())[0]!,
      terms: termValues,
      ratios: Array.from(await out.ratios.data()),
      assignment,
      codeUsage,
    };
    if (![metrics.loss, ...Object.values(termValues)].every(Number.isFinite)) return metrics;
    optimizer.step(out.grads);
    model.router.codebook.setEmbeddingGs(out.codeSamples);
    return metrics;
  } finally {
    disposePruneStepOutput(out);
  }
}
