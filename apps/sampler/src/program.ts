import { Program, envCommand } from '@aptp/core';
import { serveCommand } from './commands/serve';
import { sampleCommand } from './commands/sample';
import { evalCommand } from './commands/eval';

/** The sampler's commands (route prompts to experts, generate, serve). */
export const samplerProgram: Program = {
  name: 'aptp-sampler',
  summary: 'APTP sampler: route prompts to experts and generate images; HTTP server.',
  commands: [envCommand, serveCommand, sampleCommand, evalCommand],
};
