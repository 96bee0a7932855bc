'use strict';
// Index declarations (both variants), the Mongoose schema's statics, and the Mongoose schema's pre('save') bug on
// Mongoose 9, on Mongoose 8 and 9.
const { describe, test } = require('node:test');
const assert = require('node:assert/strict');
const { VERSIONS, freshMongoose, loadWithMongoose, loadTaskTracker, loadSeed, record } = require('../testing/helpers');

const PARTIAL = { activeKey: { $exists: true } };
const DEFAULT_INDEXES = [
  ['taskId_1_executionId_1', { taskId: 1, executionId: 1 }, { unique: true }],
  ['taskId_1_status_1_enqueuedAt_-1', { taskId: 1, status: 1, enqueuedAt: -1 }, {}],
  ['queueName_1_status_1_enqueuedAt_-1', { queueName: 1, status: 1, enqueuedAt: -1 }, {}],
  ['status_1_processingStartedAt_1', { status: 1, processingStartedAt: 1 }, {}],
  ['errorCategory_1_failedAt_-1', { errorCategory: 1, failedAt: -1 }, {}],
  ['taskId_1_createdAt_1', { taskId: 1, createdAt: 1 }, {}],
  ['status_1_updatedAt_-1', { status: 1, updatedAt: -1 }, {}],
  ['executionId_1', { executionId: 1 }, { unique: true }],
  ['activeKey_1', { activeKey: 1 }, { unique: true, partialFilterExpression: PARTIAL }],
  ['queueName_1_status_1_processingStartedAt_1', { queueName: 1, status: 1, processingStartedAt: 1 }, {}],
  ['expiresAt_1', { expiresAt: 1 }, { expireAfterSeconds: 0 }],
  ['queueName_1_status_1_publishUnconfirmedAt_1', { queueName: 1, status: 1, publishUnconfirmedAt: 1 }, {}],
  ['status_1_timeoutAt_1', { status: 1, timeoutAt: 1 }, {}],
  ['queueName_1_status_1_timeoutAt_1', { queueName: 1, status: 1, timeoutAt: 1 }, {}],
  ['groupId_1_status_1_failedAt_-1', { groupId: 1, status: 1, failedAt: -1 }, {}]
];
const SHARDED_INDEXES = DEFAULT_INDEXES.map(([name, key, options]) => {
  if (name === 'executionId_1') return [name, key, {}];
  if (name === 'activeKey_1') return ['taskId_1_activeKey_1', { taskId: 1, activeKey: 1 }, options];
  return [name, key, options];
});

/** [name, key (in order), options without Mongoose 8's `background`] of a model's schema. */
function declared(Model) {
  return Model.schema.indexes().map(([key, options]) => {
    const { name, background, ...rest } = options; // eslint-disable-line no-unused-vars
    return [name, key, rest];
  });
}

function sameOrder(actual, expected) {
  assert.deepEqual(actual.map(([name, key]) => [name, Object.entries(key)]), expected.map(([name, key]) => [name, Object.entries(key)]));
}

for (const version of VERSIONS) {
  describe(`model on ${version}`, () => {
    test('default variant: exactly the shared indexes, with their names and options', () => {
      const { Model } = loadTaskTracker(version);
      assert.deepEqual(declared(Model), DEFAULT_INDEXES);
      sameOrder(declared(Model), DEFAULT_INDEXES);
    });

    test('sharded variant: no unique executionId_1, taskId_1_activeKey_1 instead of activeKey_1', () => {
      const mongoose = freshMongoose(version);
      const { createTaskTrackerSchema } = loadWithMongoose('task_tracker.js', mongoose);
      const Sharded = mongoose.model('Sharded', createTaskTrackerSchema(mongoose.Schema, { sharded: true }), 'task_trackers');
      assert.deepEqual(declared(Sharded), SHARDED_INDEXES);
      // every unique index is prefixed by the shard key {taskId: 1}
      for (const [name, key, options] of declared(Sharded)) {
        if (options.unique) assert.equal(Object.keys(key)[0], 'taskId', name);
      }
    });

    test('the plugin on the seed schema drops its nine field-level indexes', () => {
      const mongoose = freshMongoose(version);
      const { taskTrackerPlugin } = loadWithMongoose('task_tracker.js', mongoose);
      const seed = loadSeed(version).Model;
      assert.equal(seed.schema.indexes().length, 7 + 9);
      const schema = seed.schema.clone();
      schema.plugin(taskTrackerPlugin);
      const Model = mongoose.model('SeedPlusPlugin', schema, 'task_trackers');
      assert.deepEqual(declared(Model), DEFAULT_INDEXES);
    });

    test('findRetryChain, findStuckTasks and getQueueStats send the Mongoose schema\'s queries', async () => {
      const { Model, recorder } = loadTaskTracker(version);
      recorder.results.find = () => recorder.cursor([{ taskId: 't', executionId: 'e' }]);
      recorder.results.aggregate = () => recorder.cursor([{ _id: 'queued', count: 2 }, { _id: 'DLQ', count: 1 }]);

      assert.deepEqual(await Model.findRetryChain('t'), [{ taskId: 't', executionId: 'e' }]);
      assert.deepEqual(recorder.last('find').slice(1, 3), [{ taskId: 't' }, { sort: { createdAt: 1 } }]);

      const before = Date.now();
      await Model.findStuckTasks('jobs', 60000);
      const [, filter] = recorder.last('find');
      assert.equal(filter.queueName, 'jobs');
      assert.equal(filter.status, 'processing');
      const threshold = filter.processingStartedAt.$lt.getTime();
      assert.ok(threshold <= Date.now() - 60000 && threshold >= before - 60000);

      assert.deepEqual(await Model.getQueueStats('jobs'), {
        queued: 2, processing: 0, completed: 0, failed: 0, dlq: 1, archived: 0
      });
      assert.deepEqual(recorder.last('aggregate')[1], [
        { $match: { queueName: 'jobs' } },
        { $group: { _id: '$status', count: { $sum: 1 } } }
      ]);
    });

    test('the enums are exported as the seed exports them', () => {
      const { Model } = loadTaskTracker(version);
      const seed = loadSeed(version).Model;
      assert.deepEqual(Model.TaskTrackerStatus, seed.TaskTrackerStatus);
      assert.deepEqual(Model.ErrorCategory, seed.ErrorCategory);
      assert.ok(Object.isFrozen(Model.TaskTrackerStatus));
    });
  });

  describe(`the Mongoose schema's pre('save', function (next) {...}) on ${version}`, () => {
    const fields = { taskId: 'jobs:1', executionId: 'e-1', queueName: 'jobs' };

    test(version === 'mongoose9' ? 'fails: Mongoose 9 passes no next' : 'works on Mongoose 8', async () => {
      // Given the seed model as the Node service has it
      const { Model, recorder } = loadSeed(version);
      const doc = new Model(fields);
      if (version === 'mongoose9') {
        // When it saves on Mongoose 9, Then `next()` throws and nothing is written
        await assert.rejects(doc.save(), (err) => err instanceof TypeError && /next is not a function/.test(err.message));
        assert.equal(recorder.calls.length, 0);
      } else {
        // When it saves on Mongoose 8, Then it inserts (without activeKey: the gap the plugin closes)
        await doc.save();
        const [, inserted] = recorder.last('insertOne');
        assert.ok(inserted.updatedAt instanceof Date);
        assert.equal(inserted.activeKey, undefined);
      }
    });

    test('a pre(\'save\') hook declaring next receives an options object on Mongoose 9', async () => {
      const mongoose = freshMongoose(version);
      const schema = new mongoose.Schema({ a: String });
      const seen = [];
      schema.pre('save', function (next) {
        seen.push(typeof next);
        if (typeof next === 'function') next();
      });
      const Model = mongoose.model('NextProbe', schema);
      record(Model);
      await new Model({ a: 'x' }).save();
      assert.deepEqual(seen, [version === 'mongoose9' ? 'object' : 'function']);
    });

    test('ours works: updatedAt set, insert sent', async () => {
      const { Model, recorder } = loadTaskTracker(version);
      const before = Date.now();
      await new Model(fields).save();
      const [, inserted] = recorder.last('insertOne');
      assert.ok(inserted.updatedAt.getTime() >= before);
      assert.equal(inserted.activeKey, 'jobs:1');
      // and on an update: updatedAt moves, nothing else
      const doc = Model.hydrate({ ...inserted });
      await new Promise((resolve) => setTimeout(resolve, 2));
      await doc.save();
      const [, , update] = recorder.last('updateOne');
      assert.deepEqual(Object.keys(update), ['$set']);
      assert.deepEqual(Object.keys(update.$set), ['updatedAt']);
      assert.ok(update.$set.updatedAt > inserted.updatedAt);
    });
  });
}
