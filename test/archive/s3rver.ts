/**
 * A real S3-speaking server for tests: s3rver in this process, on a free loopback port, with
 * one bucket. Node processes the tests start reach it through the AWS SDK's credential chain
 * (the environment variables set here are inherited).
 */
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';

process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
delete process.env.AWS_SESSION_TOKEN;

interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
const S3rver = createRequire(import.meta.url)('s3rver') as new (options: { address: string; port: number; silent: boolean; directory: string }) => S3rverInstance;

export const S3_REGION = 'us-east-1';

export interface TestS3 {
  readonly endpoint: string;
  readonly bucket: string;
  /** An `s3://` URL for `prefix` in the bucket. */
  url(prefix: string): string;
  close(): Promise<void>;
}

/** Starts s3rver on `port` (0: any free one); on a directory it used before, the bucket and
 *  its objects are still there (a restart). */
export async function startS3(directory: string, bucket = 'pangea-test', port = 0): Promise<TestS3 & { port: number }> {
  const server = new S3rver({ address: '127.0.0.1', port, silent: true, directory });
  const bound = (await server.run()).port;
  const endpoint = `http://127.0.0.1:${bound}`;
  const client = new S3Client({ region: S3_REGION, endpoint, forcePathStyle: true });
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (err) {
    if (!/BucketAlready/.test((err as Error).name)) throw err;
  } finally {
    client.destroy();
  }
  return {
    port: bound,
    endpoint,
    bucket,
    url: (prefix) => `s3://${bucket}/${prefix}?region=${S3_REGION}&endpoint=${encodeURIComponent(endpoint)}&path_style=true`,
    close: () => server.close(),
  };
}
