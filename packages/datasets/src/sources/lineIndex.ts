import * as fs from 'node:fs';
import { InputError } from '@aptp/core';

/**
 * Byte offsets of the lines of a text file, built by streaming it once (8 bytes a line), so a 3.3M-row TSV can be
 * read row by row with random access without holding its text in memory.
 */
export class LineIndex {
  private constructor(
    readonly file: string,
    private readonly starts: Float64Array,
    private readonly size: number,
  ) {}

  static async build(file: string): Promise<LineIndex> {
    let starts = new Float64Array(1024);
    let n = 0;
    let offset = 0;
    let size = 0;
    const push = (v: number): void => {
      if (n === starts.length) {
        const bigger = new Float64Array(starts.length * 2);
        bigger.set(starts);
        starts = bigger;
      }
      starts[n++] = v;
    };
    try {
      const stream = fs.createReadStream(file, { highWaterMark: 1 << 20 });
      let atLineStart = true;
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        for (let i = 0; i < chunk.length; i++) {
          if (atLineStart) {
            push(offset + i);
            atLineStart = false;
          }
          if (chunk[i] === 0x0a) atLineStart = true;
        }
        offset += chunk.length;
      }
      size = offset;
    } catch (err) {
      throw new InputError('cannot read text file', { code: 'E_INPUT_FILE', file, cause: err });
    }
    return new LineIndex(file, starts.slice(0, n), size);
  }

  get length(): number {
    return this.starts.length;
  }

  /** Line `i` without its line ending. */
  async line(i: number, handle?: fs.promises.FileHandle): Promise<string> {
    const start = this.starts[i]!;
    const end = i + 1 < this.starts.length ? this.starts[i + 1]! : this.size;
    const buf = Buffer.alloc(end - start);
    const fh = handle ?? (await fs.promises.open(this.file, 'r'));
    try {
      await fh.read(buf, 0, buf.length, start);
    } finally {
      if (!handle) await fh.close();
    }
    return buf.toString('utf8').replace(/\r?\n$/, '');
  }
}
