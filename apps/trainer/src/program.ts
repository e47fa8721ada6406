import { Command, Program } from '@aptp/core';
import { envCommand } from '@aptp/core';
import { evaluatorCommand } from './commands/evaluator';
import { pruneCommand } from './commands/prune';
import { routeCommand } from './commands/route';
import { finetuneCommand } from './commands/finetune';
import { teacherCommand } from './commands/teacher';
import { teacherCheckCommand } from './commands/teacherCheck';
import { demoCommand } from './commands/demo';
import { assembleCommand } from './commands/assemble';

/** The trainer's commands (teacher → prune → route → finetune). */
export const trainerProgram: Program = {
  name: 'aptp-trainer',
  summary: 'APTP training pipeline: teacher, prune (router + codes), route, fine-tune experts.',
  commands: [envCommand as unknown as Command, evaluatorCommand as unknown as Command, teacherCommand as unknown as Command, teacherCheckCommand as unknown as Command, pruneCommand as unknown as Command, routeCommand as unknown as Command, finetuneCommand as unknown as Command, assembleCommand as unknown as Command, demoCommand as unknown as Command],
};
