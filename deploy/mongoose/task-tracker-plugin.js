'use strict';
/**
 * taskTrackerPlugin - makes a Mongoose model of `task_trackers` (the Mongoose schema's TaskTracker) write
 * documents the Python tracker can rely on. Works with Mongoose 8 and 9: no middleware here
 * takes a `next` parameter (Mongoose 9 no longer passes one), and the plugin never requires
 * `mongoose` itself (it takes the Schema class from the schema it is applied to), so it runs
 * with whichever copy of Mongoose the service has.
 *
 *   schema.plugin(taskTrackerPlugin, { workerName: 'billing-worker-1' });
 *
 * Apply it LAST (after the schema's own fields, index() calls and hooks): it replaces the
 * schema's index declarations with the shared set, and its hooks must run after the service's.
 *
 * Options:
 *   sharded               false  the variant for a collection sharded on {taskId: 1} (indexes)
 *   defaultTimeoutSeconds 300    the attempt's timeout when the document has no timeoutSeconds
 *   workerName            `node:<hostname>:<pid>`  stored as claimedBy and in history entries
 *   fence                 true   a save() that changes the status of a loaded document only
 *                                applies if the status and claimToken are still the ones loaded
 *                                (else Mongoose throws DocumentNotFoundError), as Python's
 *                                transitions are fenced by their claim token
 *   historyLimit          50     entries kept in `history`
 *
 * Unknown fields: every field the Python side stores is DECLARED below, with its type, and the
 * schema stays `strict` (the default) rather than `strict: false`. Declaring gives hydrate,
 * validate and casting the right types (dates stay Dates, rawBody a Buffer, enums checked), and
 * strict keeps typos in the Node service from being written. Strict mode never drops anything
 * from a stored document: a document loaded from MongoDB keeps every field in memory, even one
 * no schema declares (a field Python adds tomorrow), and save() of a loaded document sends only
 * `$set`/`$unset` of the paths that changed, so such a field is left untouched in the database.
 * The one write that could drop fields, a whole-document replacement (replaceOne /
 * findOneAndReplace), is the caller's explicit choice; the plugin keeps activeKey right there too.
 */

const os = require('os');
const crypto = require('crypto');

const STATUSES = Object.freeze(['queued', 'processing', 'completed', 'failed', 'dlq', 'archived']);
const ACTIVE = Object.freeze(['queued', 'processing']);
const ERROR_CATEGORIES = Object.freeze([
  'transient', 'validation', 'processing', 'infrastructure', 'partner_api', 'unknown'
]);
// The timestamp each status sets when entered (tracker/states.py's _ENTERED_AT).
const ENTERED_AT = Object.freeze({
  processing: 'processingStartedAt',
  completed: 'completedAt',
  failed: 'failedAt',
  dlq: 'failedAt',
  archived: 'archivedAt'
});
const ACTIVE_MESSAGE = 'activeKey must equal taskId while an execution is queued or processing';

function isActive(status) {
  return ACTIVE.includes(status);
}

/** The indexes the collection has, in Python's order (tracker/models.py INDEXES), with the
 * names MongoDB gives by default: [keys, options] pairs as Schema#index() takes them. */
function indexSpecs({ sharded = false } = {}) {
  const named = (keys, options = {}) => [
    keys,
    { name: Object.entries(keys).map(([field, dir]) => `${field}_${dir}`).join('_'), ...options }
  ];
  // A fresh filter object each time: no schema shares (or can alter) another's.
  const partial = () => ({ activeKey: { $exists: true } });
  return [
    named({ taskId: 1, executionId: 1 }, { unique: true }),
    named({ taskId: 1, status: 1, enqueuedAt: -1 }),
    named({ queueName: 1, status: 1, enqueuedAt: -1 }),
    named({ status: 1, processingStartedAt: 1 }),
    named({ errorCategory: 1, failedAt: -1 }),
    named({ taskId: 1, createdAt: 1 }),
    named({ status: 1, updatedAt: -1 }),
    // A sharded collection can only enforce a unique index prefixed by the shard key
    // {taskId: 1}: executionId stays indexed (every lookup by execution) but not unique there;
    // {taskId, executionId} above is its unique constraint.
    sharded ? named({ executionId: 1 }) : named({ executionId: 1 }, { unique: true }),
    sharded
      ? named({ taskId: 1, activeKey: 1 }, { unique: true, partialFilterExpression: partial() })
      : named({ activeKey: 1 }, { unique: true, partialFilterExpression: partial() }),
    named({ queueName: 1, status: 1, processingStartedAt: 1 }),
    named({ expiresAt: 1 }, { expireAfterSeconds: 0 }),
    named({ queueName: 1, status: 1, publishUnconfirmedAt: 1 }),
    named({ status: 1, timeoutAt: 1 }),
    named({ queueName: 1, status: 1, timeoutAt: 1 }),
    named({ groupId: 1, status: 1, failedAt: -1 })
  ];
}

/** The error thrown when a query update enters an active status for documents whose taskId the
 * plugin cannot know (so it cannot set activeKey in the same write). */
class ActiveKeyError extends Error {
  constructor(op, status) {
    super(
      `task-tracker plugin: ${op}() sets status '${status}', and ${ACTIVE_MESSAGE}, but the ` +
      'taskId of the documents it updates is not known. Load the document and save() it, ' +
      'put taskId in the filter ({ taskId, ... }), $set taskId, or use an update pipeline ' +
      '(with the updatePipeline option on Mongoose 9).'
    );
    this.name = 'ActiveKeyError';
  }
}

function taskTrackerPlugin(schema, options = {}) {
  const opts = {
    sharded: false,
    defaultTimeoutSeconds: 300,
    workerName: `node:${os.hostname()}:${process.pid}`,
    fence: true,
    historyLimit: 50,
    ...options
  };
  const Schema = schema.constructor;
  const { Mixed } = Schema.Types;

  // === Fields the Python side stores Beyond the Mongoose schema ===
  const historyEntry = new Schema(
    {
      status: { type: String, enum: STATUSES, required: true },
      at: { type: Date, required: true },
      message: { type: String, default: '' },
      worker: { type: String }
    },
    { _id: false } // Python's entries have no _id; hydrate must not invent one
  );
  schema.add({
    history: { type: [historyEntry], default: undefined },
    payload: { type: Mixed },
    result: { type: Mixed },
    errorType: { type: String },
    activeKey: { type: String },
    claimToken: { type: String },
    claimedBy: { type: String },
    leaseExpiresAt: { type: Date },
    timeoutSeconds: { type: Number },
    timeoutAt: { type: Date },
    nextExecutionId: { type: String },
    sourceExecutionId: { type: String },
    expiresAt: { type: Date },
    republishedAt: { type: Date },
    publishUnconfirmedAt: { type: Date },
    claimedTaskId: { type: String },
    claimedExecutionId: { type: String },
    rawBody: { type: Buffer },
    groupId: { type: String }
  });
  // Appending to history must not add `__v` to Python's documents (a $push would $inc it).
  schema.set('skipVersioning', { ...(schema.get('skipVersioning') || {}), history: true });

  // === Indexes: exactly the shared set, named as MongoDB names them ===
  // Field-level `index: true`/`unique: true` (the Mongoose schema has nine) are removed: the collection's
  // index set is the one both sides declare (Python: tracker/models.py INDEXES).
  schema.eachPath((path, type) => {
    if (type._index != null && type._index !== false) type.index(false);
  });
  schema.clearIndexes();
  for (const [keys, indexOptions] of indexSpecs({ sharded: opts.sharded })) {
    schema.index(keys, indexOptions);
  }

  // === Helpers the rules below share ===
  function historyEntryFor(status, at, message) {
    return { status, at, message, worker: opts.workerName };
  }

  /** The fields a document entering `processing` without a lease gets, computed from the
   * values the write (or document) already has; returns only what must be set. */
  function claimFields(current, now) {
    const started = current.processingStartedAt || now;
    const timeoutSeconds = current.timeoutSeconds != null
      ? Number(current.timeoutSeconds)
      : opts.defaultTimeoutSeconds;
    const until = new Date(new Date(started).getTime() + timeoutSeconds * 1000);
    const fields = { leaseExpiresAt: until };
    if (current.timeoutAt == null) fields.timeoutAt = until;
    if (current.processingStartedAt == null) fields.processingStartedAt = started;
    if (current.timeoutSeconds == null) fields.timeoutSeconds = timeoutSeconds;
    if (current.claimedBy == null) fields.claimedBy = opts.workerName;
    if (current.claimToken == null) fields.claimToken = crypto.randomUUID();
    return fields;
  }

  /** Mongoose applies schema defaults to the paths a loaded document lacks and, on save(),
   * writes them (gh-2558): a Python document without `maxRetries` (Python: "the consumer's
   * default, decided at claim") would be saved with the seed's `maxRetries: 5`. A loaded
   * document's defaults stay in memory (canRetry() still sees 5) but are not written unless the
   * service sets them. This uses Mongoose's path-state machine (`$__.activePaths`), the same in
   * Mongoose 8 and 9; if it ever changes shape, this is skipped and the tests say so. */
  function forgetInitDefaults(doc) {
    const states = doc.$__ && doc.$__.activePaths;
    if (!states || typeof states.getStatePaths !== 'function' || typeof states.clearPath !== 'function') {
      return;
    }
    for (const path of Object.keys(states.getStatePaths('default'))) {
      if (path !== '_id') states.clearPath(path);
    }
  }

  // === save() and create(): the document rules ===
  // What was loaded, for the fence. post('init') runs synchronously on hydrate in 8 and 9.
  schema.post('init', function () {
    this.$locals.taskTrackerLoaded = { status: this.get('status'), claimToken: this.get('claimToken') };
  });
  schema.post('save', function () {
    this.$locals.taskTrackerLoaded = { status: this.get('status'), claimToken: this.get('claimToken') };
  });

  // No `next` parameter: Mongoose 8 treats a function of no parameters as synchronous (or
  // promise-returning) middleware, and Mongoose 9 calls every hook that way.
  schema.pre('save', function taskTrackerPreSave() {
    const doc = this;
    const now = new Date();
    if (!doc.isNew) forgetInitDefaults(doc);
    const status = doc.get('status');
    const entering = doc.isNew || doc.isModified('status');

    if (entering) {
      if (status === 'processing') {
        const lease = doc.get('leaseExpiresAt');
        const leaseGiven = lease != null && (doc.isNew || doc.isModified('leaseExpiresAt'));
        if (!leaseGiven) {
          const current = {
            processingStartedAt:
              doc.isNew || doc.isModified('processingStartedAt') ? doc.get('processingStartedAt') : null,
            timeoutSeconds: doc.get('timeoutSeconds'),
            claimedBy: doc.isNew || doc.isModified('claimedBy') ? doc.get('claimedBy') : null,
            claimToken: doc.isNew || doc.isModified('claimToken') ? doc.get('claimToken') : null,
            timeoutAt: doc.isNew || doc.isModified('timeoutAt') ? doc.get('timeoutAt') : null
          };
          for (const [path, value] of Object.entries(claimFields(current, now))) doc.set(path, value);
        }
      }
      if (ENTERED_AT[status] && doc.get(ENTERED_AT[status]) == null) {
        doc.set(ENTERED_AT[status], now);
      }
      if (!isActive(status) && !doc.isNew && doc.get('leaseExpiresAt') != null) {
        // Leaving the active states ends the claim's lease, as Python's transitions do.
        doc.set('leaseExpiresAt', undefined);
      }
      const callerWroteHistory = doc.isNew
        ? (doc.get('history') || []).length > 0
        : doc.isModified('history');
      if (!callerWroteHistory) {
        let message = status === 'processing' ? 'claimed' : '';
        if (doc.isNew) message = status === 'queued' ? 'enqueued' : 'created';
        if (doc.get('history') == null) doc.set('history', []);
        doc.get('history').push(historyEntryFor(status, now, message));
      }
    }

    // The fence: recomputed on every save, so a fence from an earlier save never lingers.
    const where = { ...(doc.$where || {}) };
    for (const key of doc.$locals.taskTrackerFence || []) delete where[key];
    doc.$locals.taskTrackerFence = [];
    const loaded = doc.$locals.taskTrackerLoaded;
    if (opts.fence && entering && !doc.isNew && loaded) {
      // Only what was loaded can fence: a document read with a projection that left
      // status or claimToken out is not fenced on it.
      if (doc.isSelected('status') && loaded.status != null) {
        where.status = loaded.status;
        doc.$locals.taskTrackerFence.push('status');
      }
      if (doc.isSelected('claimToken')) {
        where.claimToken = loaded.claimToken != null ? loaded.claimToken : { $exists: false };
        doc.$locals.taskTrackerFence.push('claimToken');
      }
    }
    doc.$where = Object.keys(where).length ? where : undefined;

    // activeKey follows status on every save (this also repairs a document an unpatched
    // service wrote without it, once that document is saved through this model).
    const wanted = isActive(status) ? doc.get('taskId') : undefined;
    if (doc.get('activeKey') !== wanted) doc.set('activeKey', wanted);

    const history = doc.get('history');
    if (history && history.length > opts.historyLimit) {
      doc.set('history', history.slice(-opts.historyLimit).map((e) => (e.toObject ? e.toObject() : e)));
    }
    doc.set('updatedAt', now);
  });

  // === Raw documents: insertMany, bulkWrite inserts, replacements ===
  /** Applies the document rules to a plain object about to be inserted (or a replacement). */
  function syncRaw(raw, now, { isReplacement = false } = {}) {
    if (raw == null || typeof raw !== 'object') return raw;
    if (typeof raw.$__ === 'object' && typeof raw.get === 'function') {
      // A Mongoose document inside insertMany([...]): the same rules as save().
      return syncDocumentForInsert(raw, now);
    }
    const status = raw.status != null ? raw.status : 'queued'; // the schema's default
    if (isActive(status) && raw.taskId != null) raw.activeKey = String(raw.taskId).trim();
    else if (!isActive(status)) delete raw.activeKey;
    if (!isReplacement || status === 'processing') {
      if (status === 'processing' && raw.leaseExpiresAt == null) {
        Object.assign(raw, claimFields(raw, now));
      } else if (ENTERED_AT[status] && raw[ENTERED_AT[status]] == null && !isReplacement) {
        raw[ENTERED_AT[status]] = now;
      }
    }
    if (!isReplacement && raw.history == null) {
      raw.history = [historyEntryFor(status, now, status === 'queued' ? 'enqueued' : 'created')];
    }
    if (Array.isArray(raw.history) && raw.history.length > opts.historyLimit) {
      raw.history = raw.history.slice(-opts.historyLimit);
    }
    return raw;
  }

  function syncDocumentForInsert(doc, now) {
    const status = doc.get('status');
    if (status === 'processing' && doc.get('leaseExpiresAt') == null) {
      const current = {};
      for (const path of ['processingStartedAt', 'timeoutSeconds', 'claimedBy', 'claimToken', 'timeoutAt']) {
        current[path] = doc.get(path);
      }
      for (const [path, value] of Object.entries(claimFields(current, now))) doc.set(path, value);
    }
    doc.set('activeKey', isActive(status) ? doc.get('taskId') : undefined);
    if (doc.get('history') == null || doc.get('history').length === 0) {
      doc.set('history', [historyEntryFor(status, now, status === 'queued' ? 'enqueued' : 'created')]);
    }
    return doc;
  }

  // Model middleware receives (next, docs) on Mongoose 8 when it declares parameters, and
  // (docs, options) on Mongoose 9: this wrapper accepts both, and never depends on `next`.
  function modelHook(body) {
    return function (first, second) {
      if (typeof first === 'function') {
        try {
          body.call(this, second);
        } catch (err) {
          return first(err);
        }
        return first();
      }
      body.call(this, first);
      return undefined;
    };
  }

  schema.pre('insertMany', modelHook(function (docs) {
    const now = new Date();
    for (const raw of Array.isArray(docs) ? docs : [docs]) syncRaw(raw, now);
  }));

  schema.pre('bulkWrite', modelHook(function (ops) {
    const now = new Date();
    for (const op of ops || []) {
      if (op.insertOne) {
        syncRaw(op.insertOne.document, now);
      } else if (op.replaceOne) {
        syncRaw(op.replaceOne.replacement, now, { isReplacement: true });
      } else {
        for (const kind of ['updateOne', 'updateMany']) {
          const spec = op[kind];
          if (spec) spec.update = rewriteUpdate(kind, spec.filter || {}, spec.update, { upsert: spec.upsert });
        }
      }
    }
  }));

  // === Query updates: updateOne, updateMany, findOneAndUpdate (findByIdAndUpdate) ===
  function taskIdFrom(filter, update) {
    const fromSet = update.$set && update.$set.taskId;
    if (typeof fromSet === 'string') return fromSet.trim();
    const fromInsert = update.$setOnInsert && update.$setOnInsert.taskId;
    const found = equalityOf(filter, 'taskId');
    if (typeof found === 'string') return found.trim();
    if (typeof fromInsert === 'string') return fromInsert.trim();
    return undefined;
  }

  /** The value `field` must equal in `filter` ({field: v}, {field: {$eq: v}}, inside $and). */
  function equalityOf(filter, field) {
    if (filter == null || typeof filter !== 'object') return undefined;
    const value = filter[field];
    if (typeof value === 'string') return value;
    if (value && typeof value === 'object' && typeof value.$eq === 'string') return value.$eq;
    for (const clause of Array.isArray(filter.$and) ? filter.$and : []) {
      const found = equalityOf(clause, field);
      if (found !== undefined) return found;
    }
    return undefined;
  }

  function touches(update, path) {
    return Object.keys(update).some(
      (op) => op.startsWith('$') && update[op] && typeof update[op] === 'object' &&
        Object.keys(update[op]).some((key) => key === path || key.startsWith(`${path}.`))
    );
  }

  /** The update to send instead of `update`, so that the write keeps activeKey and the lease
   * in step with the status it sets. Throws ActiveKeyError when it cannot. */
  function rewriteUpdate(op, filter, update, queryOptions = {}) {
    if (update == null) return update;
    const now = new Date();
    if (Array.isArray(update)) return rewritePipeline(update, now);

    // Fields given without an operator are $set (as Mongoose itself treats them).
    const normalized = {};
    const implicit = {};
    for (const [key, value] of Object.entries(update)) {
      if (key.startsWith('$')) normalized[key] = { ...value };
      else implicit[key] = value;
    }
    if (Object.keys(implicit).length) normalized.$set = { ...implicit, ...(normalized.$set || {}) };

    const set = normalized.$set;
    if (set && set.status !== undefined) {
      const status = set.status;
      if (isActive(status)) {
        const taskId = taskIdFrom(filter, normalized);
        if (taskId === undefined) throw new ActiveKeyError(op, status);
        set.activeKey = taskId;
        if (normalized.$unset) delete normalized.$unset.activeKey;
        if (status === 'processing' && set.leaseExpiresAt == null) {
          Object.assign(set, claimFields(set, now));
        }
      } else {
        delete set.activeKey;
        normalized.$unset = { ...(normalized.$unset || {}), activeKey: 1 };
        if (set.leaseExpiresAt === undefined) normalized.$unset.leaseExpiresAt = 1;
        const entered = ENTERED_AT[status];
        if (entered && set[entered] === undefined) set[entered] = now;
      }
      if (set.updatedAt === undefined) set.updatedAt = now;
      if (!touches(normalized, 'history')) {
        normalized.$push = {
          ...(normalized.$push || {}),
          history: {
            $each: [historyEntryFor(status, now, status === 'processing' ? 'claimed' : '')],
            $slice: -opts.historyLimit
          }
        };
      }
    } else if (queryOptions.upsert) {
      // An upsert that may insert: the new document's status is $setOnInsert's or the default.
      const onInsert = normalized.$setOnInsert || {};
      const status = onInsert.status !== undefined ? onInsert.status : equalityOf(filter, 'status') || 'queued';
      const taskId = taskIdFrom(filter, normalized);
      if (isActive(status) && taskId !== undefined && !touches(normalized, 'activeKey')) {
        normalized.$setOnInsert = { ...onInsert, activeKey: taskId };
        if (status === 'processing' && onInsert.leaseExpiresAt == null) {
          const fields = claimFields(onInsert, now);
          for (const [key, value] of Object.entries(fields)) {
            if (!touches(normalized, key)) normalized.$setOnInsert[key] = value;
          }
        }
      }
    }
    return normalized;
  }

  /** An update pipeline: stages appended after the caller's compute the rules from the
   * document's resulting status, whatever the pipeline did. */
  function rewritePipeline(pipeline, now) {
    const timeoutMs = {
      $multiply: [{ $ifNull: ['$timeoutSeconds', opts.defaultTimeoutSeconds] }, 1000]
    };
    const isProcessing = { $eq: ['$status', 'processing'] };
    const noLease = { $eq: [{ $ifNull: ['$leaseExpiresAt', null] }, null] };
    const needsLease = { $and: [isProcessing, noLease] };
    const started = { $ifNull: ['$processingStartedAt', now] };
    // `value` for a document that enters processing without a lease, its own field otherwise
    const whenClaimed = (field, value) => ({ $cond: [needsLease, value, `$${field}`] });
    return [
      ...pipeline,
      {
        $set: {
          activeKey: { $cond: [{ $in: ['$status', ACTIVE] }, '$taskId', '$$REMOVE'] },
          processingStartedAt: whenClaimed('processingStartedAt', started),
          timeoutSeconds: whenClaimed(
            'timeoutSeconds', { $ifNull: ['$timeoutSeconds', opts.defaultTimeoutSeconds] }
          ),
          claimedBy: whenClaimed('claimedBy', { $ifNull: ['$claimedBy', { $literal: opts.workerName }] }),
          claimToken: whenClaimed('claimToken', { $ifNull: ['$claimToken', crypto.randomUUID()] }),
          timeoutAt: whenClaimed('timeoutAt', { $add: [started, timeoutMs] }),
          leaseExpiresAt: {
            $cond: [
              needsLease,
              { $add: [started, timeoutMs] },
              { $cond: [{ $in: ['$status', ACTIVE] }, '$leaseExpiresAt', '$$REMOVE'] }
            ]
          }
        }
      }
    ];
  }

  function queryUpdateHook() {
    const update = this.getUpdate();
    const rewritten = rewriteUpdate(this.op, this.getFilter(), update, this.getOptions());
    if (rewritten !== update) this.setUpdate(rewritten);
  }
  schema.pre(['updateOne', 'updateMany', 'findOneAndUpdate'], queryUpdateHook);

  function replacementHook() {
    // A replacement is the whole stored document: activeKey follows its status.
    const replacement = this.getUpdate();
    if (replacement && typeof replacement === 'object' && !Array.isArray(replacement)) {
      syncRaw(replacement, new Date(), { isReplacement: true });
    }
  }
  schema.pre(['replaceOne', 'findOneAndReplace'], replacementHook);
}

taskTrackerPlugin.indexSpecs = indexSpecs;
taskTrackerPlugin.ActiveKeyError = ActiveKeyError;
taskTrackerPlugin.STATUSES = STATUSES;
taskTrackerPlugin.ACTIVE_STATUSES = ACTIVE;
taskTrackerPlugin.ERROR_CATEGORIES = ERROR_CATEGORIES;

module.exports = taskTrackerPlugin;
