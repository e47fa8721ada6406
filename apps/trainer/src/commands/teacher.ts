import { Command, ProgressBar, describeBackend, initBackend } from '@aptp/core';
import { formatSkipReport } from '@aptp/datasets';
import { startRun } from '../loop/startRun';
import { formatSummary } from '../loop/runTraining';
import { checkTeacherInit, runTeacher, teacherModel, teacherRunConfig, teacherSchema } from '../stages/teacher';

/**
 * `aptp-trainer teacher`: trains a text-conditioned teacher UNet (issue 7 item 1) on any data set (default: the
 * synthetic world; `dataset` with a `format`: an @aptp/datasets config, read with `loader`) and writes it as a model
 * folder. The committed default teacher (apps/trainer/assets/teacher) is reproduced by
 *   aptp-trainer teacher --config apps/trainer/configs/teacher.synthetic.json --export apps/trainer/assets/teacher
 * Resumable (`--out <run> --resume`); SIGINT/SIGTERM save a checkpoint, write the folder of the weights so far, exit.
 */
export const teacherCommand: Command<typeof teacherSchema> = {
  name: 'teacher',
  summary: 'train the text-conditioned teacher UNet (pixel space; synthetic world or any data set) and write its model folder',
  schema: teacherSchema,
  async run(args, ctx) {
    checkTeacherInit(args, teacherModel(args)); // validate the model config (and the init folder's) before touching the disk
    const choice = await initBackend({ backend: args.backend });
    ctx.err.write(`${describeBackend(choice)}\n`);
    const { run, checkpoint, notes } = startRun({ name: 'teacher', out: args.out, resume: args.resume || undefined, config: teacherRunConfig(args) });
    for (const n of notes) ctx.err.write(`${n}\n`);
    const bar = new ProgressBar(ctx.err);
    try {
      const { summary, exportDir, skips, checkSkipped } = await runTeacher({
        args,
        run,
        resume: checkpoint,
        signal: ctx.signal,
        onProgress: bar.update,
        command: `aptp-trainer teacher ${process.argv.slice(3).join(' ')}`.trim(),
        backendName: choice.name,
      });
      ctx.out.write(formatSummary(summary));
      if (skips) ctx.out.write(`data: ${formatSkipReport(skips)}\n`);
      if (checkSkipped) ctx.out.write(`${checkSkipped}\n`);
      ctx.out.write(`teacher model folder: ${exportDir}\n`);
      return 0;
    } finally {
      run.close();
    }
  },
};
