/**
 * `Ops<T>`: the only operations model code (the UNet blocks) uses (STYLE.md §2, §3 "Tensors and layout").
 *
 * Model code is written once against this interface; `EagerOps` (tfjs, differentiable, wasm-safe) runs it and a
 * later `OnnxOps` emits an ONNX graph from the same definition. Block code never indexes an axis: channel work goes
 * through the named channel ops below, so the internal layout is an implementation detail:
 *
 * - **Feature maps**: `EagerOps` keeps NHWC (wasm convolutions are channels-last), `OnnxOps` NCHW. Only
 *   `fromNCHW` / `toNCHW` (at the ends of `unet.forward`) know the public diffusers layout.
 * - **Tokens**: `[B, S, C]` for every implementation.
 * - **Per-sample vectors** (gates, time embeddings): `[B, n]`; per-sample scalars (depth gates): `[B]`.
 * - **Weights** are converted once at load (`weights.ts`): conv `[kh, kw, I, O]` and linear `[I, O]` for eager; an
 *   ONNX implementation keeps what it needs (it receives the diffusers arrays through `constant`).
 *
 * "Channel" ops act on the channel axis of a feature map, the last axis of tokens and the last axis of `[B, n]`
 * vectors. Nothing here disposes its inputs; `EagerOps` results belong to the caller (or to the enclosing `scope`).
 */
export interface Ops<T> {
  /** Implementation name (`eager`, `onnx`). */
  readonly name: string;
  /** Internal feature-map layout. */
  readonly layout: 'NHWC' | 'NCHW';

  /** Runs `fn` in a memory scope (tf.tidy for eager: intermediates freed, returned tensors kept; no-op on ONNX). */
  scope<R>(fn: () => R): R;

  // ---- boundaries -------------------------------------------------------------------------------------------
  /** Public NCHW feature map → internal layout. */
  fromNCHW(x: T): T;
  /** Internal feature map → public NCHW. */
  toNCHW(x: T): T;
  /** Static size of a feature map (internal layout hidden). */
  featureSize(x: T): { batch: number; height: number; width: number; channels: number };
  /** Feature map → tokens `[B, H·W, C]` (token index = row·W + col, as diffusers). */
  toTokens(x: T): T;
  /** Tokens `[B, H·W, C]` → feature map of the given height and width. */
  fromTokens(x: T, height: number, width: number): T;

  // ---- layers -----------------------------------------------------------------------------------------------
  /**
   * 2-D convolution of a feature map with symmetric zero `padding` (PyTorch semantics, e.g. 3×3 stride 2 pad 1).
   * `w` is in the load-time layout; `bias` `[O]` or null.
   */
  conv2d(x: T, w: T, bias: T | null, options: { stride?: number; padding: number }): T;
  /** `x·W + b` on the last axis (tokens `[B, S, I]` or vectors `[B, I]`); `w` in load-time layout (`[I, O]` eager). */
  linear(x: T, w: T, bias: T | null): T;
  /** GroupNorm over the channels of a feature map (biased variance over group × H × W); gamma/beta `[C]`. */
  groupNorm(x: T, gamma: T, beta: T, groups: number, eps: number): T;
  /** LayerNorm over the last axis of tokens; gamma/beta `[C]`. */
  layerNorm(x: T, gamma: T, beta: T, eps: number): T;
  /**
   * Multi-head scaled dot-product attention: q `[B, S, h·d]`, k/v `[B, T, h·d]` → `[B, S, h·d]`. Head j uses
   * channels `j·d … j·d+d−1`; `softmax(q kᵀ / √d) v` per head; no mask.
   */
  attention(q: T, k: T, v: T, heads: number): T;
  /** Nearest-neighbour ×2 upsampling of a feature map (PyTorch `interpolate(scale_factor=2, mode='nearest')`). */
  upsampleNearest2x(x: T): T;
  /**
   * Sinusoidal timestep embedding `[B] → [B, dim]` (diffusers `get_timestep_embedding`, evaluated in float32):
   * `freq_i = exp(−ln(10000)·i/(half − freqShift))`, `[sin, cos]`, or `[cos, sin]` with `flipSinToCos`.
   */
  timestepEmbedding(timesteps: T, dim: number, flipSinToCos: boolean, freqShift: number): T;

  // ---- elementwise ------------------------------------------------------------------------------------------
  add(a: T, b: T): T;
  mul(a: T, b: T): T;
  /** `x · s` for a number `s`. */
  scale(x: T, s: number): T;
  silu(x: T): T;
  /** Exact (erf) GELU. */
  gelu(x: T): T;

  // ---- channel ops ------------------------------------------------------------------------------------------
  /** Concatenates along channels (first input first). */
  concatChannels(xs: T[]): T;
  /** Channels `[start, start + size)`. */
  sliceChannels(x: T, start: number, size: number): T;
  /** Adds a per-sample channel vector `v [B, C]` to every position of `x` (feature map or tokens). */
  addChannels(x: T, v: T): T;
  /** Multiplies every position of `x` by a per-sample channel vector `g [B, C]` (feature map or tokens). */
  scaleChannels(x: T, g: T): T;
  /** `[B, w] → [B, w·groupSize]`: each element repeated `groupSize` times (gate element → its channels). */
  expandGroups(g: T, groupSize: number): T;

  // ---- token ops ------------------------------------------------------------------------------------------
  /** Mean over the tokens: `[B, S, C] → [B, C]` (for S = 1: the token itself as a vector). */
  meanTokens(x: T): T;
  /** A per-sample vector as a one-token sequence: `[B, C] → [B, 1, C]`. */
  asToken(v: T): T;
  /** Concatenates token sequences `[B, S_i, C]` along the token axis (first input first). */
  concatTokens(xs: T[]): T;

  // ---- batch ops --------------------------------------------------------------------------------------------
  /** `(1 − d)·x + d·fx` with a per-sample `d [B]` (depth gate blending). */
  blend(x: T, fx: T, d: T): T;
  /** Repeats `x` `times` along the batch axis (`[x; x; …]`, e.g. gates for classifier-free guidance). */
  repeatBatch(x: T, times: number): T;
  /** Batch size of any tensor (first axis). */
  batchSize(x: T): number;
}
