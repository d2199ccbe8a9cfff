/**
 * The object store backends: one behavioural suite run against the file store (a temp dir)
 * and the S3 store (an in-process s3rver on a free port), then what is particular to each:
 * temp files and directories for one; pagination, conditional-PUT answers, retries and an
 * unreachable endpoint for the other (a scripted HTTP server stands in for S3 where s3rver
 * cannot: it ignores If-None-Match on PUT). Last, URL parsing and redaction.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdirSync, readdirSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { FileObjectStore } from '../../src/archive/file-store.js';
import { openObjectStore, parseFileUrl, parseS3Url, redactUrl } from '../../src/archive/open-store.js';
import { S3ObjectStore } from '../../src/archive/s3-store.js';
import { type ObjectStore, ObjectStoreError, type ObjectStoreErrorCode } from '../../src/archive/store.js';
import { removeDir, tempDir } from '../cluster/harness.js';
import { S3_REGION, startS3, type TestS3 } from './s3rver.js';

const BUCKET = 'pangea-test';
const REGION = S3_REGION;
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

function s3Url(endpoint: string, prefix: string, bucket = BUCKET): string {
  return `s3://${bucket}/${prefix}?region=${REGION}&endpoint=${encodeURIComponent(endpoint)}&path_style=true`;
}

async function rejects(p: Promise<unknown>, code: ObjectStoreErrorCode, message?: RegExp): Promise<ObjectStoreError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ObjectStoreError, `not an ObjectStoreError: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (message) assert.match(e.message, message);
    return e;
  }
  assert.fail(`expected ${code}`);
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

interface Backend {
  /** A new, empty store. */
  open(): Promise<ObjectStore>;
  /** Whether racing creators learn which one won (S3 proper does; s3rver does not). */
  exclusiveCreate: boolean;
}

/** The contract of store.ts, whatever the backend. */
function behaviours(backend: Backend): void {
  const withStore = async (fn: (store: ObjectStore) => Promise<void>): Promise<void> => {
    const store = await backend.open();
    try {
      await fn(store);
    } finally {
      await store.close();
    }
  };

  test('put, head and get round trip, the empty object included', () =>
    withStore(async (store) => {
      assert.equal(await store.putIfAbsent('segments/1-100/shard-0', enc('hello')), 'created');
      assert.equal(dec(await store.get('segments/1-100/shard-0')), 'hello');
      assert.deepEqual(await store.head('segments/1-100/shard-0'), { size: 5 });
      assert.equal(await store.putIfAbsent('empty', new Uint8Array(0)), 'created');
      assert.equal((await store.get('empty')).byteLength, 0);
      assert.deepEqual(await store.head('empty'), { size: 0 });
    }));

  test('putIfAbsent on an existing key is exists and leaves it unchanged', () =>
    withStore(async (store) => {
      assert.equal(await store.putIfAbsent('a/b', enc('first')), 'created');
      assert.equal(await store.putIfAbsent('a/b', enc('second, longer')), 'exists');
      assert.equal(dec(await store.get('a/b')), 'first');
      assert.deepEqual(await store.head('a/b'), { size: 5 });
    }));

  test('an absent key: head is null, get is not_found', () =>
    withStore(async (store) => {
      assert.equal(await store.head('nothing/here'), null);
      await rejects(store.get('nothing/here'), 'not_found', /nothing\/here/);
      await store.putIfAbsent('nothing', enc('x'));
      assert.equal(await store.head('nothing/here'), null, 'under an object');
      await rejects(store.get('nothing/here'), 'not_found');
    }));

  test('list: keys starting with the prefix, in key order, with sizes', () =>
    withStore(async (store) => {
      const keys = ['b/2', 'a/1', 'a/10', 'a-x', 'a/2/z', 'c', 'a/1b'];
      for (const k of keys) await store.putIfAbsent(k, enc(k));
      const list = async (prefix: string): Promise<string[]> => (await store.list(prefix)).map((o) => o.key);
      assert.deepEqual(await list(''), [...keys].sort());
      assert.deepEqual(await list('a/'), ['a/1', 'a/10', 'a/1b', 'a/2/z']);
      assert.deepEqual(await list('a'), ['a-x', 'a/1', 'a/10', 'a/1b', 'a/2/z']);
      assert.deepEqual(await list('a/1'), ['a/1', 'a/10', 'a/1b']);
      assert.deepEqual(await list('a/2/'), ['a/2/z']);
      assert.deepEqual(await list('zz'), []);
      assert.deepEqual(await list('../'), []);
      assert.deepEqual(await store.list('a/2'), [{ key: 'a/2/z', size: 5 }]);
    }));

  test('bad keys are refused by every operation', () =>
    withStore(async (store) => {
      for (const key of ['', '..', '.', '/a', 'a/', 'a//b', 'a/../b', '../a', 'a b', 'ä', 'a\\b', '~tmp/x', 'x'.repeat(513)]) {
        await rejects(store.putIfAbsent(key, enc('x')), 'bad_key');
        await rejects(store.get(key), 'bad_key');
        await rejects(store.head(key), 'bad_key');
        await rejects(store.delete(key), 'bad_key');
      }
      assert.deepEqual(await store.list(''), []);
    }));

  test('delete removes the object, and is quiet when it is absent', () =>
    withStore(async (store) => {
      await store.putIfAbsent('d/1', enc('one'));
      await store.putIfAbsent('d/2', enc('two'));
      await store.delete('d/1');
      assert.equal(await store.head('d/1'), null);
      await rejects(store.get('d/1'), 'not_found');
      await store.delete('d/1');
      await store.delete('never/was');
      assert.deepEqual(await store.list('d/'), [{ key: 'd/2', size: 3 }]);
      assert.equal(await store.putIfAbsent('d/1', enc('again')), 'created');
      assert.equal(dec(await store.get('d/1')), 'again');
    }));

  test('an 8 MiB object round trips byte for byte', () =>
    withStore(async (store) => {
      const big = new Uint8Array(8 * 1024 * 1024);
      for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
      assert.equal(await store.putIfAbsent('big', big), 'created');
      assert.deepEqual(await store.head('big'), { size: big.length });
      assert.ok(Buffer.from(await store.get('big')).equals(big));
    }));

  test('five racing putIfAbsent of one key leave exactly one whole body', () =>
    withStore(async (store) => {
      const bodies = [1, 2, 3, 4, 5].map((i) => new Uint8Array(64 * 1024).fill(i));
      const results = await Promise.all(bodies.map((b) => store.putIfAbsent('race', b)));
      const created = results.filter((r) => r === 'created').length;
      if (backend.exclusiveCreate) assert.equal(created, 1, results.join());
      else assert.ok(created >= 1, results.join());
      const back = Buffer.from(await store.get('race'));
      assert.ok(bodies.some((b) => back.equals(b)), 'one of the bodies, whole');
      assert.deepEqual(await store.list(''), [{ key: 'race', size: 64 * 1024 }]);
    }));

  test('url names the store without credentials', () =>
    withStore(async (store) => {
      assert.match(store.url, /^(file|s3):\/\//);
      assert.equal(store.url, redactUrl(store.url));
    }));
}

describe('file store', () => {
  let root = '';
  let n = 0;
  before(() => {
    root = tempDir('pangea-store-');
  });
  after(() => removeDir(root));

  behaviours({ open: () => openObjectStore(pathToFileURL(join(root, `s${++n}`)).href), exclusiveCreate: true });

  test('the directory is created by the first put; temp files are gone and never listed', async () => {
    const dir = join(root, 'fresh', 'deeper');
    const store = await openObjectStore(pathToFileURL(dir).href);
    assert.deepEqual(await store.list(''), []);
    assert.equal(await store.head('k'), null);
    await store.putIfAbsent('x/y/z', enc('1'));
    await store.putIfAbsent('x/y/z', enc('2'));
    assert.deepEqual(readdirSync(join(dir, '~tmp')), [], 'no temp file left behind');
    writeFileSync(join(dir, '~tmp', '123-leftover'), 'a crashed write');
    writeFileSync(join(dir, 'x', 'not a key'), 'stray');
    assert.deepEqual(await store.list(''), [{ key: 'x/y/z', size: 1 }]);
    await store.close();
  });

  test('keys that clash with the directory layout', async () => {
    const store = new FileObjectStore(join(root, 'clash'));
    await store.putIfAbsent('a/b', enc('1'));
    await rejects(store.putIfAbsent('a', enc('2')), 'bad_key', /directory/);
    assert.equal(await store.head('a'), null);
    await rejects(store.get('a'), 'not_found');
    await store.delete('a');
    await rejects(store.putIfAbsent('a/b/c', enc('3')), 'bad_key', /runs through/);
    await rejects(store.get('a/b/c'), 'not_found');
    assert.deepEqual(await store.list(''), [{ key: 'a/b', size: 1 }]);
  });

  test('file URLs: localhost, escapes, a file in the way', async () => {
    const dir = join(root, 'with space');
    mkdirSync(dir);
    writeFileSync(join(dir, 'k'), 'v');
    const store = await openObjectStore(`file://localhost${pathToFileURL(dir).pathname}/`);
    assert.equal(dec(await store.get('k')), 'v');
    assert.equal(parseFileUrl(`file://${pathToFileURL(dir).pathname}`), dir);
    await rejects(openObjectStore(pathToFileURL(join(dir, 'k')).href), 'bad_url', /not a directory/);
    assert.throws(() => new FileObjectStore('relative'), { code: 'bad_url' });
  });
});

describe('s3 store (s3rver)', () => {
  let dir = '';
  let server: TestS3 | undefined;
  let endpoint = '';
  let raw: S3Client | undefined;
  let n = 0;
  before(async () => {
    dir = tempDir('pangea-s3rver-');
    server = await startS3(dir, BUCKET);
    endpoint = server.endpoint;
    raw = new S3Client({ region: REGION, endpoint, forcePathStyle: true });
  });
  after(async () => {
    raw?.destroy();
    await server?.close();
    removeDir(dir);
  });

  // s3rver ignores If-None-Match: racing creators each see the HEAD say absent.
  behaviours({ open: () => openObjectStore(s3Url(endpoint, `run/s${++n}`)), exclusiveCreate: false });

  test('list skips objects whose names are not keys, and other prefixes', async () => {
    const store = await openObjectStore(s3Url(endpoint, 'mixed'));
    const keys = ['k1', 'k2', 'k4/a'];
    for (const k of keys) await store.putIfAbsent(k, enc(k));
    await raw!.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'mixed/not a key', Body: 'x' }));
    await raw!.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'mixed-other/k1', Body: 'x' }));
    assert.deepEqual(
      (await store.list('')).map((o) => o.key),
      keys,
    );
    await store.close();
  });

  test('a missing bucket is unavailable, naming it', async () => {
    const store = await openObjectStore(s3Url(endpoint, 'p', 'no-such-bucket'));
    await rejects(store.get('k'), 'unavailable', /NoSuchBucket/);
    await rejects(store.putIfAbsent('k', enc('v')), 'unavailable', /^put "k" in s3:\/\/no-such-bucket\/p\?.*NoSuchBucket/);
    await rejects(store.list(''), 'unavailable', /NoSuchBucket/);
    await store.close();
  });
});

describe('s3 store against a scripted server', () => {
  type Handler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;
  let server: Server | undefined;
  let endpoint = '';
  let handler: Handler = (_req, res) => res.end();
  const seen: { method: string; path: string; headers: IncomingHttpHeaders; body: Buffer }[] = [];
  const xmlError = (res: ServerResponse, status: number, code: string): void => {
    res.writeHead(status, { 'content-type': 'application/xml' });
    res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${code}</Message></Error>`);
  };
  before(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        seen.push({ method: req.method!, path: req.url!, headers: req.headers, body });
        handler(req, res, body);
      });
    });
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve));
  });

  const script = async (h: Handler, fn: (store: ObjectStore) => Promise<void>): Promise<void> => {
    handler = h;
    seen.length = 0;
    const store = await openObjectStore(s3Url(endpoint, 'pre'));
    try {
      await fn(store);
    } finally {
      await store.close();
    }
  };

  test('the PUT is conditional and sized; a 412 answer is exists', () =>
    script(
      (req, res) => (req.method === 'HEAD' ? xmlError(res, 404, 'NotFound') : xmlError(res, 412, 'PreconditionFailed')),
      async (store) => {
        assert.equal(await store.putIfAbsent('a/b', enc('body')), 'exists');
        assert.deepEqual(
          seen.map((s) => `${s.method} ${s.path.split('?')[0]}`),
          [`HEAD /${BUCKET}/pre/a/b`, `PUT /${BUCKET}/pre/a/b`],
        );
        const put = seen[1]!;
        assert.equal(put.headers['if-none-match'], '*');
        assert.equal(put.headers['content-length'], '4');
        assert.equal(put.body.toString(), 'body');
      },
    ));

  test('a 409 conflict is followed by a fresh HEAD', () =>
    script(
      (req, res) => {
        if (req.method === 'PUT') return xmlError(res, 409, 'ConditionalRequestConflict');
        if (seen.length === 1) return xmlError(res, 404, 'NotFound');
        res.writeHead(200, { 'content-length': '4' });
        res.end();
      },
      async (store) => {
        assert.equal(await store.putIfAbsent('k', enc('body')), 'exists');
        assert.deepEqual(
          seen.map((s) => s.method),
          ['HEAD', 'PUT', 'HEAD'],
        );
      },
    ));

  // s3rver cannot page: its continuation tokens use DES, which OpenSSL 3 refuses.
  test('list follows continuation tokens, then sorts', async () => {
    const page = (keys: string[], next?: string): string =>
      '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
      `<Name>${BUCKET}</Name><KeyCount>${keys.length}</KeyCount><IsTruncated>${next !== undefined}</IsTruncated>` +
      (next ? `<NextContinuationToken>${next}</NextContinuationToken>` : '') +
      keys.map((k) => `<Contents><Key>pre/${k}</Key><Size>${k.length}</Size></Contents>`).join('') +
      '</ListBucketResult>';
    handler = (req, res) => {
      const token = new URL(req.url!, endpoint).searchParams.get('continuation-token');
      res.writeHead(200, { 'content-type': 'application/xml' });
      res.end(token === null ? page(['k3', 'k1'], 'tok/1') : page(['not a key', 'k2']));
    };
    seen.length = 0;
    const url = s3Url(endpoint, 'pre');
    const store = await S3ObjectStore.open(url, parseS3Url(url), { listPageKeys: 2 });
    assert.deepEqual(await store.list('k'), [
      { key: 'k1', size: 2 },
      { key: 'k2', size: 2 },
      { key: 'k3', size: 2 },
    ]);
    await store.close();
    const queries = seen.map((s) => new URL(s.path, endpoint).searchParams);
    assert.deepEqual(
      queries.map((q) => [q.get('prefix'), q.get('max-keys'), q.get('continuation-token')]),
      [
        ['pre/k', '2', null],
        ['pre/k', '2', 'tok/1'],
      ],
    );
  });

  test('5xx answers are retried, then unavailable', () =>
    script(
      (_req, res) => xmlError(res, 500, 'InternalError'),
      async (store) => {
        await rejects(store.get('k'), 'unavailable', /^get "k" in s3:\/\/pangea-test\/pre\?.*HTTP 500/);
        assert.equal(seen.length, 3, 'maxAttempts');
      },
    ));
});

test('an unreachable S3 endpoint fails with unavailable within seconds', async () => {
  const url = s3Url(`http://127.0.0.1:${await closedPort()}`, 'p');
  const store = await openObjectStore(url);
  for (const op of [() => store.head('k'), () => store.putIfAbsent('k', enc('v')), () => store.list('')]) {
    const t0 = Date.now();
    const e = await rejects(op(), 'unavailable', /ECONNREFUSED/);
    assert.ok(e.message.includes(url), e.message);
    assert.ok(Date.now() - t0 < 5_000, `${Date.now() - t0} ms`);
  }
  await store.close();
});

test('bad URLs are bad_url, with a message saying what is wrong and no secret', async () => {
  const cases: [string, RegExp][] = [
    ['http://example.com/x', /use file:\/\/\/absolute\/path or s3:/],
    ['archive', /use file:/],
    ['', /use file:/],
    ['file:relative/dir', /absolute path/],
    ['file://relative/dir', /"relative" would be a host/],
    ['file:///abs/dir?x=1', /no query/],
    ['file:///abs/a%2Fb', /must not include encoded/],
    ['s3:///prefix?region=r', /no bucket/],
    ['s3:bucket', /no bucket/],
    ['s3://ab/p', /"ab" is no bucket name/],
    ['s3://bucket:9000/p', /a bucket has no port/],
    ['s3://bucket/a//b', /prefix "a\/\/b"/],
    ['s3://bucket/a b', /prefix/],
    ['s3://bucket/p?regoin=us-east-1', /unknown parameter "regoin"/],
    ['s3://bucket/p?region=', /empty region/],
    ['s3://bucket/p?path_style=yes', /path_style is true or false/],
    ['s3://bucket/p?endpoint=localhost:9000', /endpoint .* is not http/],
    ['s3://bucket/p?endpoint=%%', /not a URL/],
    ['s3://AKIAX:hunter2@bucket/p', /credentials do not belong in the URL/],
    [`s3://bucket/p?endpoint=${encodeURIComponent('http://AKIAX:hunter2@host:9000')}`, /credentials do not belong in the endpoint/],
  ];
  for (const [url, why] of cases) {
    const e = await rejects(openObjectStore(url), 'bad_url', why);
    assert.ok(!e.message.includes('hunter2'), e.message);
  }
});

test('parsing s3 URLs', () => {
  assert.deepEqual(parseS3Url('s3://bucket'), { bucket: 'bucket', prefix: '', region: undefined, endpoint: undefined, pathStyle: false });
  assert.deepEqual(parseS3Url(`s3://my.bucket/a/b/?region=eu-west-1&endpoint=${encodeURIComponent('https://s3.example:9000')}&path_style=true`), {
    bucket: 'my.bucket',
    prefix: 'a/b/',
    region: 'eu-west-1',
    endpoint: 'https://s3.example:9000',
    pathStyle: true,
  });
});

test('redactUrl removes credentials and leaves the rest as written', () => {
  const plain = `s3://b/p?region=r&endpoint=${encodeURIComponent('http://h:1')}`;
  assert.equal(redactUrl(plain), plain);
  assert.equal(redactUrl('file:///var/lib/pangea/archive'), 'file:///var/lib/pangea/archive');
  assert.equal(redactUrl('s3://KEY:SECRET@b/p'), 's3://b/p');
  assert.equal(redactUrl(`s3://b/p?endpoint=${encodeURIComponent('http://u:pw@h:1/')}`), `s3://b/p?endpoint=${encodeURIComponent('http://h:1/')}`);
  assert.equal(redactUrl('https://h/o?X-Amz-Signature=abc&X-Amz-Credential=def&a=1'), 'https://h/o?X-Amz-Signature=***&X-Amz-Credential=***&a=1');
  assert.equal(redactUrl('not a url //user:pw@host/x'), 'not a url //host/x');
});
