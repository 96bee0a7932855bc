'use strict';
/**
 * Test helpers: Mongoose 8 and 9 side by side, no MongoDB server. Each model's collection has
 * its driver methods replaced by recorders (the exact calls Mongoose would send to MongoDB,
 * after its own casting and middleware), which return fake results.
 */
const fs = require('fs');
const path = require('path');
const Module = require('module');

const ROOT = path.resolve(__dirname, '..');
const VERSIONS = Object.freeze(['mongoose8', 'mongoose9']);

/** A fresh Mongoose instance of `version` that never waits for, nor talks to, a server. */
function freshMongoose(version) {
  const base = require(version);
  const mongoose = new base.Mongoose();
  mongoose.set('bufferCommands', false);
  mongoose.set('autoCreate', false);
  mongoose.set('autoIndex', false);
  return mongoose;
}

/** Loads `file` (which does `require('mongoose')`, as the Node service's files do) with
 * `mongoose` standing for that module; each call compiles the file anew. */
function loadWithMongoose(file, mongoose) {
  const filename = path.resolve(ROOT, file);
  const mod = new Module(filename, module);
  mod.filename = filename;
  mod.paths = Module._nodeModulePaths(path.dirname(filename));
  const ordinaryRequire = mod.require.bind(mod);
  mod.require = (id) => (id === 'mongoose' ? mongoose : ordinaryRequire(id));
  mod._compile(fs.readFileSync(filename, 'utf8'), filename);
  return mod.exports;
}

/** The Mongoose schema's model rewritten (task_tracker.js) on a fresh `version`, with recorders. */
function loadTaskTracker(version) {
  const mongoose = freshMongoose(version);
  const Model = loadWithMongoose('task_tracker.js', mongoose);
  return { mongoose, Model, recorder: record(Model) };
}

/** The seed's model exactly as the Node service has it today (no plugin), with recorders. */
function loadSeed(version) {
  const mongoose = freshMongoose(version);
  const Model = loadWithMongoose('testing/seed_task_tracker.js', mongoose);
  return { mongoose, Model, recorder: record(Model) };
}

function fakeCursor(docs) {
  const items = docs.slice();
  return {
    toArray: async () => items,
    next: async () => items.shift() || null,
    close: async () => undefined,
    [Symbol.asyncIterator]: async function* () { yield* items; }
  };
}

/** Replaces the native collection methods Mongoose calls on `Model.collection` with recorders.
 * `recorder.calls` is [[method, ...args]]; `recorder.results[method]` overrides a result
 * (a value or a function of the call's arguments). */
function record(Model) {
  const calls = [];
  const results = {};
  const collection = Model.collection;
  const defaults = {
    insertOne: (doc) => ({ acknowledged: true, insertedId: doc && doc._id }),
    insertMany: (docs) => ({
      acknowledged: true,
      insertedCount: docs.length,
      insertedIds: Object.fromEntries(docs.map((d, i) => [i, d._id]))
    }),
    updateOne: () => ({ acknowledged: true, matchedCount: 1, modifiedCount: 1, upsertedCount: 0, upsertedId: null }),
    updateMany: () => ({ acknowledged: true, matchedCount: 1, modifiedCount: 1, upsertedCount: 0, upsertedId: null }),
    replaceOne: () => ({ acknowledged: true, matchedCount: 1, modifiedCount: 1, upsertedCount: 0, upsertedId: null }),
    findOneAndUpdate: () => null,
    findOneAndReplace: () => null,
    findOne: () => null,
    deleteOne: () => ({ acknowledged: true, deletedCount: 1 }),
    bulkWrite: (ops) => ({
      ok: 1,
      insertedCount: ops.filter((op) => op.insertOne).length,
      matchedCount: 0,
      modifiedCount: 0,
      deletedCount: 0,
      upsertedCount: 0,
      upsertedIds: {},
      insertedIds: {},
      getInsertedIds: () => ({}),
      isOk: () => true
    }),
    find: () => fakeCursor([]),
    aggregate: () => fakeCursor([])
  };
  for (const [method, fallback] of Object.entries(defaults)) {
    collection[method] = function recorded(...args) {
      calls.push([method, ...args]);
      const override = results[method];
      const value = override === undefined ? fallback(...args)
        : typeof override === 'function' ? override(...args) : override;
      // find/aggregate return a cursor synchronously, as the driver does; the rest promise.
      return method === 'find' || method === 'aggregate' ? value : Promise.resolve(value);
    };
  }
  return {
    calls,
    results,
    cursor: fakeCursor,
    last(method) {
      const found = calls.filter((call) => call[0] === method);
      return found[found.length - 1];
    },
    clear() { calls.length = 0; }
  };
}

module.exports = { ROOT, VERSIONS, freshMongoose, loadWithMongoose, loadTaskTracker, loadSeed, record, fakeCursor };

/** A document as the Python tracker stores it (tracker/models.py, camelCase, None fields
 * absent), in `status`; `extra` overrides or adds fields. */
function pythonDocument(mongoose, status = 'processing', extra = {}) {
  const now = new Date(Date.now() - 1000);
  const taskId = `reports:${Math.random().toString(16).slice(2, 10)}`;
  const doc = {
    _id: new mongoose.Types.ObjectId(),
    taskId,
    executionId: `exec-${Math.random().toString(16).slice(2, 10)}`,
    queueName: 'reports',
    messageVersion: '1.0',
    status,
    enqueuedAt: now,
    retryCount: 0,
    metadata: { source: 'python' },
    createdAt: now,
    updatedAt: now,
    history: [{ status: 'queued', at: now, message: 'enqueued' }],
    payload: { n: 1, items: [1, 2, 3], nested: { a: null } }
  };
  if (status === 'queued' || status === 'processing') doc.activeKey = taskId;
  if (status !== 'queued') {
    Object.assign(doc, {
      processingStartedAt: now,
      claimToken: 'python-claim-token',
      claimedBy: 'py-worker',
      timeoutSeconds: 120,
      timeoutAt: new Date(now.getTime() + 120000)
    });
    doc.history.push({ status: 'processing', at: now, message: 'claimed', worker: 'py-worker' });
  }
  if (status === 'processing') doc.leaseExpiresAt = new Date(now.getTime() + 60000);
  if (status === 'completed') Object.assign(doc, { completedAt: now, result: { ok: true } });
  if (['failed', 'dlq', 'archived'].includes(status)) {
    Object.assign(doc, {
      failedAt: now,
      errorMessage: 'boom',
      errorCategory: 'transient',
      errorStack: 'Traceback ...',
      errorType: 'TimeoutError'
    });
  }
  if (status === 'failed') doc.nextExecutionId = 'next-exec';
  if (status === 'dlq' || status === 'archived') doc.groupId = 'group-1';
  if (status === 'archived') Object.assign(doc, { archivedAt: now, archivedBy: 'py', expiresAt: new Date(now.getTime() + 86400000) });
  if (status !== 'queued' && status !== 'processing') doc.history.push({ status, at: now, message: '' });
  return { ...doc, ...extra };
}

module.exports.pythonDocument = pythonDocument;
