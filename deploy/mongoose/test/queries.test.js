'use strict';
// Query updates, insertMany, bulkWrite and replacements through task_tracker.js, on Mongoose 8
// and 9: the exact driver call each sends.
const { describe, test } = require('node:test');
const assert = require('node:assert/strict');
const { VERSIONS, loadTaskTracker } = require('../testing/helpers');

const LEAVING = ['completed', 'failed', 'dlq', 'archived'];

for (const version of VERSIONS) {
  describe(`query middleware on ${version}`, () => {
    for (const [op, call] of [
      ['updateOne', (M, f, u) => M.updateOne(f, u)],
      ['updateMany', (M, f, u) => M.updateMany(f, u)],
      ['findOneAndUpdate', (M, f, u) => M.findOneAndUpdate(f, u, { returnDocument: 'after' })]
    ]) {
      for (const status of LEAVING) {
        test(`${op} to ${status} unsets activeKey and the lease`, async () => {
          // Given a recording collection
          const { Model, recorder } = loadTaskTracker(version);
          // When the Node service finishes executions with a query update
          await call(Model, { executionId: 'e-1' }, { status, errorMessage: 'x' });
          // Then the same write unsets activeKey and leaseExpiresAt and records the change
          const [method, filter, update] = recorder.calls[recorder.calls.length - 1];
          assert.equal(method, op);
          assert.deepEqual(filter, { executionId: 'e-1' });
          assert.deepEqual(update.$unset, { activeKey: 1, leaseExpiresAt: 1 });
          assert.equal(update.$set.status, status);
          assert.equal(update.$set.errorMessage, 'x');
          assert.equal(update.$set.activeKey, undefined);
          assert.ok(update.$set.updatedAt instanceof Date);
          assert.equal(update.$push.history.$each[0].status, status);
          assert.equal(update.$push.history.$slice, -50);
        });
      }

      test(`${op} to processing with taskId in the filter sets activeKey and a lease`, async () => {
        const { Model, recorder } = loadTaskTracker(version);
        // When a Node worker claims with the taskId in the filter
        await call(Model, { taskId: 'jobs:1', executionId: 'e-1', status: 'queued' }, { $set: { status: 'processing' } });
        // Then activeKey is the filter's taskId; lease and timeout end 300 s after the start
        const [, , update] = recorder.calls[recorder.calls.length - 1];
        assert.equal(update.$set.activeKey, 'jobs:1');
        assert.ok(update.$set.processingStartedAt instanceof Date);
        const lease = update.$set.leaseExpiresAt - update.$set.processingStartedAt;
        assert.equal(lease, 300 * 1000);
        assert.equal(update.$set.timeoutAt.getTime(), update.$set.leaseExpiresAt.getTime());
        assert.equal(update.$set.timeoutSeconds, 300);
        assert.match(update.$set.claimedBy, /^node:/);
        assert.match(update.$set.claimToken, /^[0-9a-f-]{36}$/);
        assert.equal(update.$unset, undefined);
      });

      test(`${op} to queued without a known taskId is refused before anything is sent`, async () => {
        const { Model, recorder } = loadTaskTracker(version);
        // When the update cannot know the documents' taskId
        const attempt = call(Model, { executionId: 'e-1' }, { status: 'queued' });
        // Then it fails with the advice, and nothing reached the collection
        await assert.rejects(attempt, (err) => {
          assert.equal(err.name, 'ActiveKeyError');
          assert.match(err.message, /save\(\)/);
          assert.match(err.message, /taskId/);
          return true;
        });
        assert.equal(recorder.calls.length, 0);
      });
    }

    test('taskId from $set or from {$eq} / $and in the filter', async () => {
      const { Model, recorder } = loadTaskTracker(version);
      await Model.updateOne({ executionId: 'e' }, { $set: { status: 'queued', taskId: 'a' } });
      await Model.updateOne({ taskId: { $eq: 'b' } }, { status: 'queued' });
      await Model.updateOne({ $and: [{ executionId: 'e' }, { taskId: 'c' }] }, { status: 'queued' });
      const keys = recorder.calls.map(([, , update]) => update.$set.activeKey);
      assert.deepEqual(keys, ['a', 'b', 'c']);
    });

    test('an update that does not touch status is left alone', async () => {
      const { Model, recorder } = loadTaskTracker(version);
      await Model.updateOne({ executionId: 'e' }, { $set: { errorMessage: 'x' }, $inc: { retryCount: 1 } });
      const [, , update] = recorder.last('updateOne');
      assert.deepEqual(update, { $set: { errorMessage: 'x' }, $inc: { retryCount: 1 } });
    });

    test('a given lease is kept when entering processing', async () => {
      const { Model, recorder } = loadTaskTracker(version);
      const lease = new Date('2030-01-01T00:00:00Z');
      await Model.updateOne({ taskId: 't' }, { status: 'processing', leaseExpiresAt: lease, claimedBy: 'w' });
      const [, , update] = recorder.last('updateOne');
      assert.equal(update.$set.leaseExpiresAt.getTime(), lease.getTime());
      assert.equal(update.$set.claimedBy, 'w');
    });

    test('an upsert that inserts a queued execution gets activeKey on insert', async () => {
      const { Model, recorder } = loadTaskTracker(version);
      await Model.findOneAndUpdate(
        { executionId: 'e-9' },
        { $setOnInsert: { taskId: 'jobs:9', queueName: 'jobs' } },
        { upsert: true, returnDocument: 'after' }
      );
      const [, , update] = recorder.last('findOneAndUpdate');
      assert.equal(update.$setOnInsert.activeKey, 'jobs:9');
      assert.equal(update.$setOnInsert.status, 'queued');
    });

    test('an update pipeline gets a final stage that derives activeKey and the lease', async () => {
      const { Model, recorder } = loadTaskTracker(version);
      const pipeline = [{ $set: { status: 'queued' } }];
      // Mongoose 9 refuses pipelines unless asked (updatePipeline: true); 8 takes them as they are
      await Model.updateMany({ queueName: 'jobs' }, pipeline, { updatePipeline: true });
      const [, , sent, options] = recorder.last('updateMany');
      assert.equal(sent.length, 2);
      assert.deepEqual(sent[0], pipeline[0]);
      assert.deepEqual(sent[1].$set.activeKey, { $cond: [{ $in: ['$status', ['queued', 'processing']] }, '$taskId', '$$REMOVE'] });
      assert.ok(sent[1].$set.leaseExpiresAt.$cond);
      assert.equal(options.updatePipeline, version === 'mongoose8' ? true : undefined);
    });

    if (version === 'mongoose9') {
      test('Mongoose 9 refuses a pipeline without updatePipeline: true', async () => {
        const { Model } = loadTaskTracker(version);
        // thrown synchronously, when the query is built
        assert.throws(() => Model.updateOne({}, [{ $set: { status: 'queued' } }]), /updatePipeline/);
      });
    }

    test('insertMany: activeKey and the lease on each document (hydrated and lean)', async () => {
      const { Model, recorder } = loadTaskTracker(version);
      await Model.insertMany([
        { taskId: 'i:1', executionId: 'i-1', queueName: 'q' },
        { taskId: 'i:2', executionId: 'i-2', queueName: 'q', status: 'processing' },
        { taskId: 'i:3', executionId: 'i-3', queueName: 'q', status: 'completed' }
      ]);
      await Model.insertMany([{ taskId: 'l:1', executionId: 'l-1', queueName: 'q' }], { lean: true });
      const [first, second] = recorder.calls.filter(([m]) => m === 'insertMany').map(([, docs]) => docs);
      assert.deepEqual(first.map((d) => d.activeKey), ['i:1', 'i:2', undefined]);
      assert.ok(first[1].leaseExpiresAt instanceof Date);
      assert.ok(first[1].timeoutAt instanceof Date);
      assert.equal(first[0].leaseExpiresAt, undefined);
      assert.ok('activeKey' in first[0] && !('activeKey' in first[2]));
      assert.equal(second[0].activeKey, 'l:1');
    });

    test('bulkWrite: inserts and updates follow the same rules', async () => {
      const { Model, recorder } = loadTaskTracker(version);
      await Model.bulkWrite([
        { insertOne: { document: { taskId: 'b:1', executionId: 'b-1', queueName: 'q' } } },
        { updateOne: { filter: { executionId: 'b-0' }, update: { status: 'dlq' } } },
        { updateMany: { filter: { taskId: 'b:2' }, update: { $set: { status: 'processing' } } } }
      ]);
      const [, ops] = recorder.last('bulkWrite');
      assert.equal(ops[0].insertOne.document.activeKey, 'b:1');
      assert.deepEqual(ops[1].updateOne.update.$unset, { activeKey: 1, leaseExpiresAt: 1 });
      assert.equal(ops[2].updateMany.update.$set.activeKey, 'b:2');
      assert.ok(ops[2].updateMany.update.$set.leaseExpiresAt instanceof Date);
    });

    test('replaceOne: the replacement carries activeKey per its status', async () => {
      const { Model, recorder } = loadTaskTracker(version);
      await Model.replaceOne({ executionId: 'r-1' }, { taskId: 'r:1', executionId: 'r-1', queueName: 'q', status: 'queued' });
      await Model.replaceOne({ executionId: 'r-2' }, { taskId: 'r:2', executionId: 'r-2', queueName: 'q', status: 'completed', activeKey: 'r:2' });
      const [first, second] = recorder.calls.filter(([m]) => m === 'replaceOne').map(([, , doc]) => doc);
      assert.equal(first.activeKey, 'r:1');
      assert.ok(!('activeKey' in second));
    });
  });
}
