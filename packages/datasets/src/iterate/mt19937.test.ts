import { NumpyRandomState } from './mt19937';

// Reference values printed by numpy 2.4 (legacy RandomState):
//   np.random.seed(42); np.random.random_sample()                        → 0.3745401188473625
//   np.random.seed(42); np.random.permutation(10)                        → [8 1 5 0 7 2 9 4 3 6]
//   np.random.seed(42); np.random.choice(40504, 8, replace=False)        → [17315 2331 31451 30416 38675 38627 22442 26791]
//   np.random.seed(7);  np.random.choice(100, 5, replace=False)          → [37 26 78 91 49]
describe('NumpyRandomState (numpy legacy MT19937)', () => {
  it('matches numpy random_sample after seed(42)', () => {
    expect(new NumpyRandomState(42).randomSample()).toBe(0.3745401188473625);
  });

  it('matches numpy permutation and choice(replace=False)', () => {
    expect(Array.from(new NumpyRandomState(42).permutation(10))).toEqual([8, 1, 5, 0, 7, 2, 9, 4, 3, 6]);
    expect(Array.from(new NumpyRandomState(42).choiceWithoutReplacement(40504, 8))).toEqual([17315, 2331, 31451, 30416, 38675, 38627, 22442, 26791]);
    expect(Array.from(new NumpyRandomState(7).choiceWithoutReplacement(100, 5))).toEqual([37, 26, 78, 91, 49]);
  });

  it('rejects bad seeds and oversize samples', () => {
    expect(() => new NumpyRandomState(-1)).toThrow(/seed/);
    expect(() => new NumpyRandomState(1).choiceWithoutReplacement(3, 4)).toThrow(/count/);
  });
});
