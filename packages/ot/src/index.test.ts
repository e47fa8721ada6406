import * as api from './index';

describe('@aptp/ot public API', () => {
  it('exports exactly this list', () => {
    expect(Object.keys(api).sort()).toEqual(
      [
        'SINKHORN_KNOPP_DEFAULTS',
        'SINKHORN_LOG_DEFAULTS',
        'argmaxRows',
        'assignmentMatrix',
        'balancedAssignment',
        'emd',
        'linearSumAssignment',
        'marginalsOf',
        'matrixRows',
        'sinkhorn',
        'sinkhornKnopp',
        'sinkhornKnoppTf',
        'sinkhornLog',
        'sinkhornLogTf',
        'toMatrix',
        'transportCost',
        'zerosMatrix',
      ].sort(),
    );
  });

  it('`sinkhorn` is the log-domain solver (the name used in issue 5)', () => {
    expect(api.sinkhorn).toBe(api.sinkhornLog);
  });
});
