import { checkpointingConfigSchema } from './config';

describe('checkpointing config', () => {
  it('defaults and rejects unknown keys', () => {
    expect(checkpointingConfigSchema.parse({})).toEqual({ checkpointingSteps: 1000, checkpointsTotalLimit: 2 });
    expect(checkpointingConfigSchema.safeParse({ checkpointsTotalLimit: 0 }).success).toBe(false);
    expect(checkpointingConfigSchema.safeParse({ checkpointing_steps: 5 }).success).toBe(false);
  });
});
