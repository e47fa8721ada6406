/** @aptp/ot: optimal transport for APTP routing (APTP.md §2.5) — SwAV Sinkhorn-Knopp, log-domain entropic OT, exact OT. */
export { sinkhornKnopp, sinkhornKnoppTf, SINKHORN_KNOPP_DEFAULTS } from './sinkhornKnopp';
export type { SinkhornKnoppOptions } from './sinkhornKnopp';
export { sinkhornLog, sinkhornLog as sinkhorn, sinkhornLogTf, SINKHORN_LOG_DEFAULTS } from './sinkhornLog';
export type { SinkhornLogOptions, SinkhornLogResult } from './sinkhornLog';
export { emd } from './emd';
export type { EmdOptions, EmdResult } from './emd';
export { linearSumAssignment, assignmentMatrix } from './linearSumAssignment';
export type { AssignmentResult } from './linearSumAssignment';
export { balancedAssignment } from './balancedAssignment';
export type { BalancedAssignmentOptions, BalancedAssignmentResult } from './balancedAssignment';
export { argmaxRows, marginalsOf, matrixRows, toMatrix, transportCost, zerosMatrix } from './matrix';
export type { Matrix, MatrixInput } from './matrix';
