import { z } from 'zod';
import { describeBackend, initBackend } from '../backend/init';
import type { Command } from './command';

const schema = z.strictObject({
  backend: z.string().optional().describe('tensor backend: tfjs-node-gpu | tfjs-node | wasm | cpu (env APTP_BACKEND)'),
});

/** `env`: which tensor backend this machine gets, and why the better ones were skipped (every app has it). */
export const envCommand: Command<typeof schema> = {
  name: 'env',
  summary: 'show the tensor backend chosen on this machine and the versions in use',
  schema,
  async run(args, ctx) {
    const choice = await initBackend({ backend: args.backend });
    ctx.out.write(`${describeBackend(choice)}\nnode ${process.versions.node}\n`);
    return 0;
  },
};
