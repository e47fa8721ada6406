import { z } from 'zod';
import { Command, ConfigError } from '@aptp/core';
import { batcherConfigSchema } from '../server/batcher';
import { loadImageEngine } from '../server/engine';
import type { ImageEngineFactory } from '../server/engine';
import { ImageServer, serverConfigSchema } from '../server/http';

const schema = z.strictObject({
  modelDir: z.string().optional().describe('APTP model folder: router, experts, text encoder, scheduler, VAE decoder (required)'),
  backend: z.string().optional().describe('tensor backend: tfjs-node-gpu | tfjs-node | wasm | cpu (env APTP_BACKEND)'),
  ...serverConfigSchema.shape,
  ...batcherConfigSchema.shape,
});
export type ServeArgs = z.infer<typeof schema>;

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

/**
 * `serve`: load the model folder into an engine, serve it over HTTP until SIGINT/SIGTERM, then drain (finish every
 * accepted request) and exit. `createEngine` is the seam between the server and the generation code.
 */
export function makeServeCommand(createEngine: ImageEngineFactory): Command<typeof schema> {
  return {
    name: 'serve',
    summary: 'HTTP server: POST /v1/images routes each prompt to its expert and batches per expert; /healthz, /metrics',
    schema,
    async run(args, ctx) {
      if (!args.modelDir) {
        throw new ConfigError('a model folder is required (the APTP model folder the sampler loads)', { code: 'E_CONFIG_FIELD', field: '--model-dir' });
      }
      const engine = await createEngine({ modelDir: args.modelDir, backend: args.backend, signal: ctx.signal });
      try {
        if (ctx.signal.aborted) return; // interrupted while loading
        const server = new ImageServer(engine, args);
        const address = await server.listen();
        const experts = engine.info.experts.length;
        ctx.out.write(
          `listening on ${address.url} (${experts} expert${experts === 1 ? '' : 's'}, max batch ${args.maxBatchSize}, ` +
            `max wait ${args.maxWaitMs} ms, queue ${args.queueCapacity} per expert, timeout ${args.timeoutMs} ms)\n`,
        );
        await aborted(ctx.signal);
        ctx.err.write('serve: draining: no new connections; finishing queued and running requests\n');
        await server.close();
        ctx.out.write('serve: stopped\n');
      } finally {
        await engine.dispose();
      }
    },
  };
}

export const serveCommand = makeServeCommand(loadImageEngine);
