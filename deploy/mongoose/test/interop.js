'use strict';
/**
 * Interop driver for tests/test_mongoose.py (Python <-> Node), no MongoDB server.
 *
 *   node test/interop.js INPUT.json   (INPUT: MongoDB Extended JSON, see below; '-' = stdin)
 *
 * Input: {"documents": [<Python task_trackers documents>], "stuckTimeoutsMs": [ms, ...]}
 * Output (stdout, one JSON object whose documents and updates are relaxed Extended JSON):
 *   python: {mongoose8: [...], mongoose9: [...]} one entry per input document: validation
 *           errors, canRetry(), isStuck() (default and each timeout), the keys toObject()
 *           keeps, and the exact updateOne() a save() after an edit sends (filter and update);
 *   node:   documents the Node service inserts (insertOne's argument): with the plugin
 *           (task_tracker.js) on both versions, and without it (the Mongoose schema as it is) on
 *           Mongoose 8 — on Mongoose 9 the seed's save() fails, which is reported instead;
 *   indexes: the index specs each variant declares, on both versions.
 */
const fs = require('fs');
const { VERSIONS, loadTaskTracker, loadSeed, freshMongoose, loadWithMongoose, record } = require('../testing/helpers');

const ACTIVE = ['queued', 'processing'];

/** Edits a save() of a Python document makes: active -> completed, finished -> archived, and an
 * archived document (no transition left) gets a metadata change. */
function edit(doc) {
  const status = doc.get('status');
  if (ACTIVE.includes(status)) {
    doc.status = 'completed';
    return 'status -> completed';
  }
  if (status !== 'archived') {
    doc.status = 'archived';
    doc.archivedBy = 'node-admin';
    return 'status -> archived';
  }
  doc.metadata = { ...(doc.metadata || {}), editedBy: 'node' };
  return 'metadata edit';
}

function indexSpecs(Model) {
  return Model.schema.indexes().map(([key, options]) => {
    const spec = { name: options.name, key: Object.entries(key) };
    for (const option of ['unique', 'partialFilterExpression', 'expireAfterSeconds']) {
      if (options[option] !== undefined) spec[option] = options[option];
    }
    return spec;
  });
}

async function pythonDocuments(version, text, timeouts) {
  const { Model, recorder, mongoose } = loadTaskTracker(version);
  const { EJSON } = mongoose.mongo.BSON;
  const documents = EJSON.parse(text).documents || [];
  const results = [];
  // validateSync() is deprecated on Mongoose 9 (it warns once); the tests use it on purpose.
  for (const raw of documents) {
    const doc = Model.hydrate(raw);
    const syncError = doc.validateSync();
    let asyncError = null;
    try {
      await doc.validate();
    } catch (err) {
      asyncError = err;
    }
    const kept = Object.keys(doc.toObject({ depopulate: true, minimize: false }));
    const result = {
      executionId: raw.executionId,
      validationErrors: Object.keys((syncError && syncError.errors) || {}),
      asyncValidationErrors: Object.keys((asyncError && asyncError.errors) || {}),
      canRetry: doc.canRetry(),
      isStuckDefault: doc.isStuck(),
      isStuck: Object.fromEntries(timeouts.map((ms) => [String(ms), doc.isStuck(ms)])),
      missingKeys: Object.keys(raw).filter((key) => !kept.includes(key))
    };
    recorder.clear();
    result.edit = edit(doc);
    try {
      await doc.save();
      const calls = recorder.calls.filter(([method]) => method === 'updateOne');
      result.saveCalls = recorder.calls.map(([method]) => method);
      result.filter = EJSON.serialize(calls[0][1], { relaxed: true });
      result.update = EJSON.serialize(calls[0][2], { relaxed: true });
    } catch (err) {
      result.saveError = `${err.name}: ${err.message}`;
    }
    results.push(result);
  }
  return results;
}

async function nodeDocuments(version) {
  const created = {};
  const started = new Date(Date.now() - 1000);
  const base = (name) => ({
    taskId: `node_tasks:${name}:${version}`,
    executionId: `${name}-${version}-${Math.random().toString(16).slice(2, 10)}`,
    queueName: 'node_tasks',
    metadata: { source: 'node', version }
  });

  const patched = loadTaskTracker(version);
  const { EJSON } = patched.mongoose.mongo.BSON;
  const inserted = async (Model, recorder, fields) => {
    recorder.clear();
    await new Model(fields).save();
    return EJSON.serialize(recorder.last('insertOne')[1], { relaxed: true });
  };
  created.patched_queued = await inserted(patched.Model, patched.recorder, base('patched-queued'));
  created.patched_processing = await inserted(patched.Model, patched.recorder, {
    ...base('patched-processing'),
    status: 'processing',
    processingStartedAt: started
  });

  const seed = loadSeed(version);
  for (const [name, fields] of [
    ['unpatched_queued', base('unpatched-queued')],
    ['unpatched_processing', { ...base('unpatched-processing'), status: 'processing', processingStartedAt: started }]
  ]) {
    try {
      created[name] = await inserted(seed.Model, seed.recorder, fields);
    } catch (err) {
      created[name] = { error: `${err.name}: ${err.message}` };
    }
  }
  return created;
}

function declaredIndexes(version) {
  const mongoose = freshMongoose(version);
  const { createTaskTrackerSchema } = loadWithMongoose('task_tracker.js', mongoose);
  const Sharded = mongoose.model('ShardedTracker', createTaskTrackerSchema(mongoose.Schema, { sharded: true }), 'task_trackers');
  record(Sharded);
  return {
    default: indexSpecs(mongoose.model('Task_Tracker')),
    sharded: indexSpecs(Sharded),
    collection: mongoose.model('Task_Tracker').collection.name
  };
}

async function main() {
  const source = process.argv[2];
  const text = !source ? '{"documents": []}' : source === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(source, 'utf8');
  const timeouts = JSON.parse(text).stuckTimeoutsMs || [];
  process.stdout.write(`${JSON.stringify(await collect(text, timeouts))}\n`);
}

async function collect(text, timeouts) {
  const output = { versions: {}, python: {}, node: {}, indexes: {} };
  for (const version of VERSIONS) {
    output.versions[version] = require(`${version}/package.json`).version;
    output.python[version] = await pythonDocuments(version, text, timeouts);
    output.node[version] = await nodeDocuments(version);
    output.indexes[version] = declaredIndexes(version);
  }
  return output;
}

if (process.env.NODE_TEST_CONTEXT) {
  // Picked up by `node --test test/` (every .js file in a directory named test runs there):
  // check the driver itself instead of printing.
  const { test } = require('node:test');
  const assert = require('node:assert/strict');
  test('interop.js produces Node documents and index specs on both versions', async () => {
    const output = await collect('{"documents": []}', []);
    for (const version of VERSIONS) {
      assert.equal(output.node[version].patched_queued.activeKey, output.node[version].patched_queued.taskId);
      assert.ok(output.node[version].patched_processing.leaseExpiresAt);
      assert.equal(output.indexes[version].default.length, 15);
      assert.equal(output.indexes[version].collection, 'task_trackers');
    }
    assert.match(output.node.mongoose9.unpatched_queued.error, /next is not a function/);
  });
} else {
  main().catch((err) => {
    process.stderr.write(`${err.stack}\n`);
    process.exit(1);
  });
}
