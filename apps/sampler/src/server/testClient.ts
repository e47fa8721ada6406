import * as http from 'node:http';

/** Test helpers for the server: a one-shot HTTP client (no keep-alive, so no sockets outlive a test) and polling. */
export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  json<T = Record<string, unknown>>(): T;
}

export interface HttpRequestOptions {
  /** Send the body in 256-byte chunks without Content-Length. */
  chunked?: boolean;
  /** Aborting destroys the request (a client that goes away). */
  signal?: AbortSignal;
}

export function httpRequest(baseUrl: string, method: string, path: string, body?: unknown, options: HttpRequestOptions = {}): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? Buffer.from(body) : Buffer.from(JSON.stringify(body));
    const headers: http.OutgoingHttpHeaders = data ? { 'Content-Type': 'application/json' } : {};
    if (data && !options.chunked) headers['Content-Length'] = data.byteLength;
    const req = http.request(new URL(path, baseUrl), { method, agent: false, headers, signal: options.signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        resolve({ status: res.statusCode!, headers: res.headers, body: buf, json: <T>() => JSON.parse(buf.toString('utf8')) as T });
      });
    });
    req.on('error', reject);
    if (data) {
      if (options.chunked) for (let i = 0; i < data.byteLength; i += 256) req.write(data.subarray(i, i + 256));
      else req.write(data);
    }
    req.end();
  });
}

/** Polls `condition` every 2 ms; rejects after `timeoutMs`. */
export async function waitFor(condition: () => boolean, timeoutMs = 2000, what = 'condition'): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Width and height from a PNG's IHDR chunk (throws if the signature is wrong). */
export function pngSize(png: Uint8Array): { width: number; height: number } {
  const b = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  if (b.subarray(0, 8).toString('hex') !== '89504e470d0a1a0a' || b.subarray(12, 16).toString('latin1') !== 'IHDR') throw new Error('not a PNG');
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
}
