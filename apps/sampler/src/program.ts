import { Command, Program } from '@aptp/core';
import { envCommand } from '@aptp/core';
import { serveCommand } from './commands/serve';
import { sampleCommand } from './commands/sample';

/** The sampler's commands (route prompts to experts, generate, serve). */
export const samplerProgram: Program = {
  name: 'aptp-sampler',
  summary: 'APTP sampler: route prompts to experts and generate images; HTTP server.',
  commands: [envCommand as unknown as Command, serveCommand as unknown as Command, sampleCommand as unknown as Command],
};
