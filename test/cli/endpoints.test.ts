import assert from 'node:assert/strict';
import { test } from 'node:test';
import { alarmsOf, samples } from '../../src/cli/endpoints.js';

const text = [
  '# HELP pangea_hot_quota_alarm x',
  'pangea_hot_quota_alarm 1',
  'pangea_archive_last_error_info{error="s3: \\"denied\\"\\nretrying"} 1',
  'pangea_commit_stalled_seconds 12.5',
  'pangea_ready 0',
  'pangea_ready_other 1',
].join('\n');

test('metric samples are read with their labels unescaped, and only for the exact name', () => {
  assert.deepEqual(samples(text, 'pangea_archive_last_error_info'), [{ labels: { error: 's3: "denied"\nretrying' }, value: 1 }]);
  assert.deepEqual(samples(text, 'pangea_ready'), [{ labels: {}, value: 0 }]);
});

test('alarms: the quota, the archive error, a stalled commit and not ready; none on a healthy node', () => {
  assert.deepEqual(
    alarmsOf(text).map((a) => a.split(':')[0]),
    ['hot_quota', 'archive', 'commit_stalled', 'not_ready'],
  );
  assert.deepEqual(alarmsOf('pangea_hot_quota_alarm 0\npangea_commit_stalled_seconds 0\npangea_ready 1\n'), []);
});
