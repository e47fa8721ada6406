import { z } from 'zod';

/**
 * Checkpointing settings of every training stage, in the shape of the reference YAML `training.logging` (keys
 * camelCased). Used as `runTraining({ saveEvery: checkpointingSteps, keepLast: checkpointsTotalLimit })`.
 */
export const checkpointingConfigSchema = z.strictObject({
  checkpointingSteps: z
    .number()
    .int()
    .min(0)
    .default(1000)
    .describe('save a checkpoint every N steps (and at the end / on SIGINT, SIGTERM); the reference saves with each validation, training.validation_steps = 1000 (APTP.md §1.3); 0 = only at the end'),
  checkpointsTotalLimit: z
    .number()
    .int()
    .min(1)
    .default(2)
    .describe('training.logging.checkpoints_total_limit: checkpoints kept; reference 1 (APTP.md §1.5), we keep 2 so a damaged newest checkpoint has a fallback'),
});

export type CheckpointingConfig = z.output<typeof checkpointingConfigSchema>;
export type CheckpointingConfigInput = z.input<typeof checkpointingConfigSchema>;
