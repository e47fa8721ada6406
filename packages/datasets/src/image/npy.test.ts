import { encodeNpyRgb, resizeBilinearCv2 } from './npy';

const rgb = (w: number, h: number, f: (x: number, y: number, c: number) => number) => {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) data[(y * w + x) * 3 + c] = f(x, y, c);
  return { width: w, height: h, data };
};

describe('cv2-style bilinear resize and .npy (APTP.md §7.2 reference images)', () => {
  it('is the identity at the same size', () => {
    const img = rgb(5, 4, (x, y, c) => (x * 37 + y * 11 + c * 5) % 256);
    expect(resizeBilinearCv2(img, 5, 4)).toEqual(img);
  });

  it('halving averages 2×2 blocks (INTER_LINEAR with half-pixel centers)', () => {
    const img = rgb(4, 2, (x, y, c) => [0, 100, 20, 40][x]! + y * 50 + c);
    const out = resizeBilinearCv2(img, 2, 1);
    expect(Array.from(out.data)).toEqual([75, 76, 77, 55, 56, 57]); // (0+100+50+150)/4, (20+40+70+90)/4
  });

  it('doubling interpolates at quarter positions and clamps at the edges: [0, 100] → [0, 25, 75, 100]', () => {
    const out = resizeBilinearCv2(rgb(2, 1, (x) => x * 100), 4, 1);
    expect(Array.from(out.data).filter((_, i) => i % 3 === 0)).toEqual([0, 25, 75, 100]);
  });

  it('writes the same .npy header as numpy.save for a (2, 3, 3) uint8 array', () => {
    const bytes = encodeNpyRgb(rgb(3, 2, (x, y, c) => y * 9 + x * 3 + c));
    // numpy 2.4: np.save(f, np.arange(18, dtype=np.uint8).reshape(2, 3, 3)) → 128-byte header, then the data
    const header = "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3, 3), }";
    expect(Array.from(bytes.subarray(0, 10))).toEqual([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, 118, 0]);
    expect(Buffer.from(bytes.subarray(10, 128)).toString('latin1')).toBe(`${header}${' '.repeat(118 - header.length - 1)}\n`);
    expect(Array.from(bytes.subarray(128))).toEqual(Array.from({ length: 18 }, (_, i) => i));
  });
});
