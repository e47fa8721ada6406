import { performance } from 'node:perf_hooks';
import * as tf from '@tensorflow/tfjs-core';
import type { EagerOps } from '@aptp/core';

/**
 * Where the time of a UNet forward goes, two ways:
 * - per `Ops` call (`timedOps`): every call the blocks make (conv2d, linear, attention, groupNorm, …) is timed with
 *   its multiply-accumulates, so each op type gets its own effective GFLOP/s. Forward only (gradients run later,
 *   inside tfjs).
 * - per tfjs kernel (`kernelProfile`, `tf.profile`): Conv2D, BatchMatMul, Transpose, Slice, … for a forward or a
 *   forward+backward; the backward of the custom gradients is made of the same forward kernels.
 * tfjs cpu and wasm run kernels synchronously on this thread, so each call is timed directly, in wall time and in
 * process CPU time: on a shared machine the CPU time is the cost that does not depend on the other processes' load.
 */

export interface OpStat {
  name: string;
  calls: number;
  /** Process CPU time (user + system). */
  cpuMs: number;
  /** Wall time. */
  ms: number;
  /** Multiply-accumulates (0 when the op has no matmul-like work). */
  macs: number;
}

function cpuNowMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

export interface OpTimer {
  ops: EagerOps;
  stats(): OpStat[];
  reset(): void;
}

const prod = (xs: readonly number[]): number => xs.reduce((a, b) => a * b, 1);

/** Category and MACs of one `Ops` call (NHWC eager layout). */
function classify(method: string, args: unknown[], result: unknown): { name: string; macs: number } {
  const shapeOf = (t: unknown): number[] => (t as tf.Tensor).shape;
  switch (method) {
    case 'conv2d': {
      const [kh, kw, ci, co] = shapeOf(args[1]) as [number, number, number, number];
      const stride = (args[3] as { stride?: number }).stride ?? 1;
      const out = shapeOf(result);
      return { name: `conv2d ${kh}×${kw}${stride > 1 ? ` s${stride}` : ''}`, macs: prod(out.slice(0, 3)) * kh * kw * ci * co };
    }
    case 'linear': {
      const x = shapeOf(args[0]);
      const [i, o] = shapeOf(args[1]) as [number, number];
      const rows = prod(x.slice(0, -1));
      // Time-embedding projections act on [B, C] vectors; everything else on tokens.
      return { name: x.length === 2 ? 'linear (vectors)' : 'linear (tokens)', macs: rows * i * o };
    }
    case 'attention': {
      const [b, s, c] = shapeOf(args[0]) as [number, number, number];
      const t = shapeOf(args[1])[1]!;
      return { name: t === s ? 'attention core (self)' : 'attention core (cross)', macs: 2 * b * s * t * c };
    }
    default:
      return { name: method, macs: 0 };
  }
}

/**
 * Wraps `inner` so that every top-level method call is timed (calls `inner` makes on itself are not re-counted).
 * `scope` (the whole forward's tidy) and cheap accessors pass through untimed.
 */
export function timedOps(inner: EagerOps): OpTimer {
  const byName = new Map<string, OpStat>();
  const untimed = new Set<PropertyKey>(['scope', 'featureSize', 'batchSize', 'name', 'layout', 'constructor']);
  let depth = 0;
  const ops = new Proxy(inner, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== 'function' || untimed.has(prop)) return value;
      const method = value as (...a: unknown[]) => unknown;
      return (...args: unknown[]) => {
        if (depth > 0) return method.apply(target, args);
        depth++;
        const c0 = cpuNowMs();
        const t0 = performance.now();
        let result: unknown;
        try {
          result = method.apply(target, args);
        } finally {
          depth--;
        }
        const ms = performance.now() - t0;
        const cpuMs = cpuNowMs() - c0;
        const { name, macs } = classify(String(prop), args, result);
        const s = byName.get(name) ?? { name, calls: 0, cpuMs: 0, ms: 0, macs: 0 };
        s.calls++;
        s.cpuMs += cpuMs;
        s.ms += ms;
        s.macs += macs;
        byName.set(name, s);
        return result;
      };
    },
  });
  return {
    ops,
    stats: () => [...byName.values()].sort((a, b) => b.cpuMs - a.cpuMs),
    reset: () => byName.clear(),
  };
}

export interface KernelStat extends OpStat {
  /** Total bytes of the outputs (a proxy for data movement). */
  outBytes: number;
}

/** MACs of one tfjs kernel from its shapes (matmuls without transpose flags, convs of any dilation). */
function kernelMacs(name: string, inputShapes: Array<number[] | null>, outputShapes: number[][]): number {
  const out = outputShapes[0];
  if (!out) return 0;
  if (name === 'Conv2D' || name === 'FusedConv2D') {
    const f = inputShapes[1];
    return f ? prod(out.slice(0, 3)) * prod(f) : 0;
  }
  if (name === 'BatchMatMul' || name === '_FusedMatMul' || name === 'MatMul') {
    const a = inputShapes[0];
    return a ? prod(out) * a[a.length - 1]! : 0;
  }
  return 0;
}

export interface KernelProfile {
  stats: KernelStat[];
  /** Wall and CPU time of the whole profiled call. */
  wallMs: number;
  cpuMs: number;
  /** Calls of custom-gradient wrappers (`unnamed scope`): their kernels are listed themselves, so they are not summed. */
  wrapperCalls: number;
}

interface TimedBackend {
  time(f: () => void): Promise<{ kernelMs: number; getExtraProfileInfo?(): string }>;
}

/**
 * Runs `fn` once under `tf.profile` and sums kernel time, calls and MACs per kernel name. The backend's kernel timer
 * is replaced for the duration by one that reports process CPU time (and the wall time as extra info): both the
 * cpu and wasm backends time a kernel by running it synchronously.
 */
export async function kernelProfile(fn: () => void | Promise<void>): Promise<KernelProfile> {
  const backend = tf.backend() as unknown as TimedBackend;
  const own = Object.prototype.hasOwnProperty.call(backend, 'time');
  const original = backend.time;
  backend.time = async (f) => {
    const c0 = cpuNowMs();
    const t0 = performance.now();
    f();
    const wall = performance.now() - t0;
    const kernelMs = cpuNowMs() - c0;
    return { kernelMs, getExtraProfileInfo: () => String(wall) };
  };
  const c0 = cpuNowMs();
  const t0 = performance.now();
  let info: Awaited<ReturnType<typeof tf.profile>>;
  try {
    info = await tf.profile(async () => {
      await fn();
    });
  } finally {
    if (own) backend.time = original;
    else delete (backend as Partial<TimedBackend>).time;
  }
  const wallMs = performance.now() - t0;
  const cpuMs = cpuNowMs() - c0;
  const byName = new Map<string, KernelStat>();
  let wrapperCalls = 0;
  for (const k of info.kernels) {
    // tf.customGrad runs its forward as an anonymous kernel whose time includes the kernels it calls.
    if (k.name === 'unnamed scope') {
      wrapperCalls++;
      continue;
    }
    const s = byName.get(k.name) ?? { name: k.name, calls: 0, cpuMs: 0, ms: 0, macs: 0, outBytes: 0 };
    s.calls++;
    s.cpuMs += Number(k.kernelTimeMs) || 0;
    s.ms += Number(k.extraInfo) || 0;
    s.macs += kernelMacs(k.name, k.inputShapes as Array<number[] | null>, k.outputShapes as number[][]);
    s.outBytes += (k.outputShapes as number[][]).reduce((a, sh) => a + 4 * prod(sh), 0);
    byName.set(k.name, s);
  }
  return { stats: [...byName.values()].sort((a, b) => b.cpuMs - a.cpuMs), wallMs, cpuMs, wrapperCalls };
}
