import { Command, Program } from '@aptp/core';
import { envCommand } from './commands/env';

/** The trainer's commands (teacher → prune → route → finetune). */
export const trainerProgram: Program = {
  name: 'aptp-trainer',
  summary: 'APTP training pipeline: teacher, prune (router + codes), route, fine-tune experts.',
  commands: [envCommand as unknown as Command],
};
