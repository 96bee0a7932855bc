'use strict';
// save() and create() through task_tracker.js (the Mongoose schema + plugin), on Mongoose 8 and 9: the
// exact insertOne/updateOne each sends, captured on the model's collection.
const { describe, test } = require('node:test');
const assert = require('node:assert/strict');
const { VERSIONS, loadTaskTracker, loadSeed, pythonDocument } = require('../testing/helpers');

const PYTHON_ONLY_FIELDS = [
  'history', 'payload', 'result', 'errorType', 'activeKey', 'claimToken', 'claimedBy',
  'leaseExpiresAt', 'timeoutSeconds', 'timeoutAt', 'nextExecutionId', 'sourceExecutionId',
  'expiresAt', 'republishedAt', 'publishUnconfirmedAt', 'claimedExecutionId', 'rawBody', 'groupId'
];

for (const version of VERSIONS) {
  describe(`save() on ${version}`, () => {
    test('collection name is task_trackers', () => {
      // Given the model the seed names 'Task_Tracker'
      const { Model } = loadTaskTracker(version);
      // Then Mongoose picks the collection Python uses
      assert.equal(Model.collection.name, 'task_trackers');
    });

    test('every Python field is declared with its type', () => {
      const { Model } = loadTaskTracker(version);
      const expected = {
        history: 'Array', payload: 'Mixed', result: 'Mixed', errorType: 'String', activeKey: 'String',
        claimToken: 'String', claimedBy: 'String', leaseExpiresAt: 'Date', timeoutSeconds: 'Number',
        timeoutAt: 'Date', nextExecutionId: 'String', sourceExecutionId: 'String', expiresAt: 'Date',
        republishedAt: 'Date', publishUnconfirmedAt: 'Date', claimedExecutionId: 'String',
        rawBody: 'Buffer', groupId: 'String'
      };
      for (const [path, type] of Object.entries(expected)) {
        const schemaType = Model.schema.path(path);
        assert.ok(schemaType, `${path} is declared`);
        assert.equal(schemaType.instance, type === 'Array' ? 'Array' : type, path);
      }
      const entry = Model.schema.path('history').schema;
      assert.deepEqual(Object.keys(entry.paths).sort(), ['at', 'message', 'status', 'worker']);
      assert.deepEqual(entry.path('status').enumValues, Object.values(Model.TaskTrackerStatus));
      assert.equal(Model.schema.get('strict'), true);
    });

    test('new queued document gets activeKey = taskId and no lease', async () => {
      // Given a recording collection
      const { Model, recorder } = loadTaskTracker(version);
      // When the Node service creates a queued execution
      await new Model({ taskId: ' jobs:1 ', executionId: 'e-1', queueName: 'jobs' }).save();
      // Then the insert carries activeKey (trimmed like taskId), a history entry, no lease
      const [, inserted] = recorder.last('insertOne');
      assert.equal(inserted.status, 'queued');
      assert.equal(inserted.taskId, 'jobs:1');
      assert.equal(inserted.activeKey, 'jobs:1');
      assert.equal(inserted.leaseExpiresAt, undefined);
      assert.equal(inserted.history.length, 1);
      assert.equal(inserted.history[0].status, 'queued');
      assert.ok(inserted.updatedAt instanceof Date);
    });

    test('new processing document gets activeKey, a lease and timeoutAt', async () => {
      // Given a worker name and a recording collection
      const { Model, recorder } = loadTaskTracker(version);
      const started = new Date('2030-01-01T00:00:00Z');
      // When the Node service tracks a message on arrival, processing, with no lease
      await new Model({
        taskId: 'jobs:2', executionId: 'e-2', queueName: 'jobs', status: 'processing',
        processingStartedAt: started
      }).save();
      // Then the lease and the attempt's timeout end processingStartedAt + 300 s
      const [, inserted] = recorder.last('insertOne');
      assert.equal(inserted.activeKey, 'jobs:2');
      assert.equal(inserted.timeoutSeconds, 300);
      assert.equal(inserted.leaseExpiresAt.toISOString(), '2030-01-01T00:05:00.000Z');
      assert.equal(inserted.timeoutAt.toISOString(), '2030-01-01T00:05:00.000Z');
      assert.match(inserted.claimedBy, /^node:/);
      assert.match(inserted.claimToken, /^[0-9a-f-]{36}$/);
    });

    test('timeoutSeconds on the document wins over the default; a given lease is kept', async () => {
      const { Model, recorder } = loadTaskTracker(version);
      const started = new Date('2030-01-01T00:00:00Z');
      // When one document brings its timeout and another its own lease
      await new Model({
        taskId: 'jobs:3', executionId: 'e-3', queueName: 'jobs', status: 'processing',
        processingStartedAt: started, timeoutSeconds: 30
      }).save();
      const lease = new Date('2030-01-01T00:00:10Z');
      await new Model({
        taskId: 'jobs:4', executionId: 'e-4', queueName: 'jobs', status: 'processing',
        processingStartedAt: started, leaseExpiresAt: lease, claimedBy: 'w-4'
      }).save();
      // Then
      const inserts = recorder.calls.filter(([m]) => m === 'insertOne').map(([, doc]) => doc);
      assert.equal(inserts[0].leaseExpiresAt.toISOString(), '2030-01-01T00:00:30.000Z');
      assert.equal(inserts[0].timeoutAt.toISOString(), '2030-01-01T00:00:30.000Z');
      assert.equal(inserts[1].leaseExpiresAt.toISOString(), lease.toISOString());
      assert.equal(inserts[1].claimedBy, 'w-4');
    });

    test('Model.create() applies the same rules', async () => {
      const { Model, recorder } = loadTaskTracker(version);
      await Model.create({ taskId: 'jobs:5', executionId: 'e-5', queueName: 'jobs', status: 'processing' });
      const [, inserted] = recorder.last('insertOne');
      assert.equal(inserted.activeKey, 'jobs:5');
      assert.ok(inserted.leaseExpiresAt instanceof Date);
      assert.ok(inserted.processingStartedAt instanceof Date);
    });

    test('a hydrated Python document saved as completed: $unset activeKey, only what changed', async () => {
      // Given a Python document in processing (every Python field, plus one no schema knows)
      const { Model, recorder, mongoose } = loadTaskTracker(version);
      const raw = pythonDocument(mongoose, 'processing', {
        rawBody: Buffer.from('raw'), sourceExecutionId: 'src', republishedAt: new Date(),
        publishUnconfirmedAt: new Date(), claimedExecutionId: 'claimed', futureField: { kept: true }
      });
      const doc = Model.hydrate(raw);
      // When the Node service completes it
      doc.status = 'completed';
      await doc.save();
      // Then one updateOne: fenced on the loaded status and claim, $set of the change,
      // $unset of activeKey and the lease, a $push to history, nothing else
      const [method, filter, update] = recorder.last('updateOne');
      assert.equal(method, 'updateOne');
      assert.deepEqual(filter, { _id: raw._id, status: 'processing', claimToken: 'python-claim-token' });
      assert.deepEqual(Object.keys(update).sort(), ['$push', '$set', '$unset']);
      assert.deepEqual(Object.keys(update.$set).sort(), ['completedAt', 'status', 'updatedAt']);
      assert.equal(update.$set.status, 'completed');
      assert.deepEqual(Object.keys(update.$unset).sort(), ['activeKey', 'leaseExpiresAt']);
      assert.deepEqual(Object.keys(update.$push), ['history']);
      assert.equal(update.$push.history.$each.length, 1);
      assert.equal(update.$push.history.$each[0].status, 'completed');
      // and the document in memory still has every Python field and the unknown one
      const kept = doc.toObject();
      const stored = Object.keys(raw).filter((field) => !['activeKey', 'leaseExpiresAt'].includes(field));
      assert.ok(PYTHON_ONLY_FIELDS.filter((field) => !(field in raw)).every((f) => ['result', 'nextExecutionId', 'expiresAt', 'errorType', 'groupId'].includes(f)));
      for (const field of stored) assert.ok(field in kept, `${field} kept`);
      assert.deepEqual(kept.futureField, { kept: true });
      assert.equal(kept.activeKey, undefined);
    });

    test('a saved Python document never gets Mongoose defaults written (maxRetries, __v)', async () => {
      // Given a Python document without maxRetries (Python: the consumer decides at claim)
      const { Model, recorder, mongoose } = loadTaskTracker(version);
      const raw = pythonDocument(mongoose, 'queued');
      assert.equal(raw.maxRetries, undefined);
      const doc = Model.hydrate(raw);
      // When it is edited and saved
      doc.errorMessage = 'note';
      await doc.save();
      // Then the update names only what the edit changed; canRetry still sees the default 5
      const [, , update] = recorder.last('updateOne');
      assert.deepEqual(update, { $set: { errorMessage: 'note', updatedAt: update.$set.updatedAt } });
      assert.equal(doc.maxRetries, 5);
    });

    test('without the plugin, the seed model writes maxRetries: 5 into a Python document', async (t) => {
      if (version === 'mongoose9') return t.skip('the seed cannot save on Mongoose 9 at all');
      // Given the seed model as it is
      const { Model, recorder, mongoose } = loadSeed(version);
      const doc = Model.hydrate(pythonDocument(mongoose, 'processing'));
      // When a Python document is completed through it
      doc.status = 'completed';
      await doc.save();
      // Then activeKey stays (the task stays "active" for Python), and a default is written
      const [, , update] = recorder.last('updateOne');
      assert.equal(update.$unset, undefined);
      assert.equal(update.$set.maxRetries, 5);
      return undefined;
    });

    test('entering processing from queued on a hydrated document claims it', async () => {
      // Given a Python queued document
      const { Model, recorder, mongoose } = loadTaskTracker(version);
      const raw = pythonDocument(mongoose, 'queued');
      const doc = Model.hydrate(raw);
      // When a Node worker starts it through save()
      doc.status = 'processing';
      await doc.save();
      // Then the claim is written and fenced on "still queued, unclaimed"; activeKey unchanged
      const [, filter, update] = recorder.last('updateOne');
      assert.deepEqual(filter, { _id: raw._id, status: 'queued', claimToken: { $exists: false } });
      assert.equal(update.$unset, undefined);
      for (const field of ['status', 'processingStartedAt', 'leaseExpiresAt', 'timeoutAt', 'timeoutSeconds', 'claimedBy', 'claimToken']) {
        assert.ok(field in update.$set, field);
      }
      assert.equal(update.$set.activeKey, undefined); // already equal to taskId
      const lease = update.$set.leaseExpiresAt.getTime() - update.$set.processingStartedAt.getTime();
      assert.equal(lease, 300 * 1000);
    });

    test('a fenced save refused by the database raises DocumentNotFoundError', async () => {
      // Given a Python processing document whose claim Python has since taken over
      const { Model, recorder, mongoose } = loadTaskTracker(version);
      const doc = Model.hydrate(pythonDocument(mongoose, 'processing'));
      recorder.results.updateOne = { acknowledged: true, matchedCount: 0, modifiedCount: 0 };
      // When the Node service completes it
      doc.status = 'completed';
      // Then the save is refused instead of overwriting Python's outcome
      await assert.rejects(doc.save(), (err) => err.name === 'DocumentNotFoundError');
    });

    test('a document loaded without claimToken (projection) is fenced on status only', async () => {
      const { Model, recorder, mongoose } = loadTaskTracker(version);
      const raw = pythonDocument(mongoose, 'processing');
      delete raw.claimToken;
      const doc = Model.hydrate(raw, { claimToken: 0 });
      doc.status = 'completed';
      await doc.save();
      const [, filter] = recorder.last('updateOne');
      assert.deepEqual(filter, { _id: raw._id, status: 'processing' });
    });

    test('the fence does not linger: a later save without a status change is not fenced', async () => {
      const { Model, recorder, mongoose } = loadTaskTracker(version);
      const raw = pythonDocument(mongoose, 'processing');
      const doc = Model.hydrate(raw);
      doc.status = 'completed';
      await doc.save();
      doc.errorMessage = 'later';
      await doc.save();
      const [, filter] = recorder.last('updateOne');
      assert.deepEqual(filter, { _id: raw._id });
    });

    test('saving an unpatched active document repairs its activeKey', async () => {
      // Given a queued document the unpatched service wrote (no activeKey)
      const { Model, recorder, mongoose } = loadTaskTracker(version);
      const raw = pythonDocument(mongoose, 'queued');
      delete raw.activeKey;
      const doc = Model.hydrate(raw);
      // When any save happens through the patched model
      doc.errorMessage = 'x';
      await doc.save();
      // Then activeKey is set
      const [, , update] = recorder.last('updateOne');
      assert.equal(update.$set.activeKey, raw.taskId);
    });

    test('history keeps the last 50 entries', async () => {
      // Given a document with 50 history entries
      const { Model, recorder, mongoose } = loadTaskTracker(version);
      const at = new Date();
      const history = Array.from({ length: 50 }, (_, i) => ({ status: 'queued', at, message: `m${i}` }));
      const doc = Model.hydrate(pythonDocument(mongoose, 'queued', { history }));
      // When a status change appends one more
      doc.status = 'processing';
      await doc.save();
      // Then the whole, trimmed array is written (oldest dropped), still without __v
      const [, , update] = recorder.last('updateOne');
      assert.equal(update.$set.history.length, 50);
      assert.equal(update.$set.history[0].message, 'm1');
      assert.equal(update.$set.history[49].status, 'processing');
      assert.equal(update.$inc, undefined);
      assert.equal(update.$push, undefined);
    });

    test('validateSync() and validate() accept Python documents in every status', async () => {
      const { Model, mongoose } = loadTaskTracker(version);
      for (const status of Object.values(Model.TaskTrackerStatus)) {
        const doc = Model.hydrate(pythonDocument(mongoose, status, { rawBody: Buffer.from([0, 255]) }));
        assert.equal(doc.validateSync(), undefined, status);
        await doc.validate();
      }
    });

    test('canRetry() and isStuck() on hydrated Python documents', () => {
      const { Model, mongoose } = loadTaskTracker(version);
      const old = new Date(Date.now() - 40 * 60 * 1000);
      const cases = [
        [{ retryCount: 4 }, true], // maxRetries absent: the default 5, as Python's
        [{ retryCount: 5 }, false],
        [{ retryCount: 2, maxRetries: 2 }, false],
        [{ retryCount: 1, maxRetries: 3 }, true]
      ];
      for (const [fields, expected] of cases) {
        assert.equal(Model.hydrate(pythonDocument(mongoose, 'failed', fields)).canRetry(), expected);
      }
      const stuck = Model.hydrate(pythonDocument(mongoose, 'processing', { processingStartedAt: old }));
      const fresh = Model.hydrate(pythonDocument(mongoose, 'processing'));
      const done = Model.hydrate(pythonDocument(mongoose, 'completed', { processingStartedAt: old }));
      assert.equal(stuck.isStuck(), true);
      assert.equal(stuck.isStuck(60 * 60 * 1000), false);
      assert.equal(fresh.isStuck(), false);
      assert.equal(fresh.isStuck(0), true);
      assert.equal(done.isStuck(), false);
    });
  });
}
