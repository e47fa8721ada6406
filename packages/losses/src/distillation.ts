import * as tf from '@tensorflow/tfjs-core';
import { InputError } from '@aptp/core';
import { checkSameShape } from './diffusion';
import { stopGradient } from './tensorOps';

/**
 * Distillation from the full model (APTP.md §5.2–5.3; reference `Pruner.step` / `FineTuner.step`). The teacher is a
 * constant (computed under no-grad in the reference): no gradient reaches it.
 *
 *   L_distill = mean (F_student − F_teacher)²
 *   L_block   = (1/#blocks) Σ_blocks mean (student_k − teacher_k)²   over the 9 top-level blocks d0…d3, m, u0…u3
 */

/** The reference's block-output keys, in hook order: down blocks, mid block, up blocks (aptp/README.md §4.1). */
export const BLOCK_KEYS = ['d0', 'd1', 'd2', 'd3', 'm', 'u0', 'u1', 'u2', 'u3'] as const;
export type BlockKey = (typeof BLOCK_KEYS)[number];

/** Output distillation: mean squared difference between student and teacher outputs (scalar). */
export function distillationLoss(student: tf.Tensor, teacher: tf.Tensor): tf.Scalar {
  checkSameShape(student, teacher, 'teacher');
  return tf.tidy(() => tf.mean(tf.squaredDifference(student, stopGradient(teacher))) as tf.Scalar);
}

/**
 * Block (feature) distillation: the average over blocks of each block's mean squared difference. Blocks are matched
 * by key (`d0 … u3` for the gated UNet; any keys work) and averaged over the student's keys, as the reference does.
 */
export function blockDistillationLoss(student: Readonly<Record<string, tf.Tensor>>, teacher: Readonly<Record<string, tf.Tensor>>): tf.Scalar {
  const keys = Object.keys(student);
  if (keys.length === 0) throw new InputError('no block outputs given', { field: 'student', expected: BLOCK_KEYS.join(', ') });
  for (const k of keys) {
    if (!(k in teacher)) throw new InputError('teacher lacks a block output of the student', { field: `teacher.${k}`, expected: keys.join(', '), found: Object.keys(teacher).join(', ') });
    checkSameShape(student[k]!, teacher[k]!, `teacher.${k}`);
  }
  return tf.tidy(() => {
    let sum: tf.Tensor = tf.scalar(0);
    for (const k of keys) sum = tf.add(sum, tf.mean(tf.squaredDifference(student[k]!, stopGradient(teacher[k]!))));
    return tf.div(sum, keys.length) as tf.Scalar;
  });
}
