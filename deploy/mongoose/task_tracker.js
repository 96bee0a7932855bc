'use strict';
// The service's own mongoose (8 or 9); the tests substitute mongoose8/mongoose9 for it.
const mongoose = require('mongoose'),
  Schema = mongoose.Schema;
const taskTrackerPlugin = require('./task-tracker-plugin');

/**
 * TaskTracker - Universal task execution tracking across all queue types
 *
 * The Mongoose schema's model, made safe for Mongoose 9 and shared with the Python tracker:
 * - pre('save') takes no `next` (Mongoose 9 passes none: the seed's `next()` throws there);
 * - taskTrackerPlugin adds the fields the Python side stores, keeps `activeKey` and the lease
 *   in step with `status`, and declares the collection's indexes (see README.md).
 *
 * Provides:
 * - Deduplication: Prevents same task from being enqueued multiple times
 * - Idempotency: Prevents same execution from being processed twice
 * - Tracing: Links all retry attempts through shared taskId
 * - Monitoring: Real-time status tracking and metrics
 *
 * Key Design:
 * - taskId: Business identity (stable across retries)
 * - executionId: Execution identity (unique per attempt)
 * - No separate correlationId needed - taskId serves this purpose
 */

const TaskTrackerStatus = Object.freeze({
  QUEUED: 'queued', // Task enqueued, waiting for processing
  PROCESSING: 'processing', // Currently being processed by worker
  COMPLETED: 'completed', // Successfully completed
  FAILED: 'failed', // Failed but eligible for retry
  DLQ: 'dlq', // Sent to Dead Letter Queue (max retries exceeded)
  ARCHIVED: 'archived' // Archived from DLQ (manually or automatically)
});

const ErrorCategory = Object.freeze({
  TRANSIENT: 'transient', // Network timeouts, temporary unavailability
  VALIDATION: 'validation', // Invalid input, missing required fields
  PROCESSING: 'processing', // Business logic errors, data inconsistencies
  INFRASTRUCTURE: 'infrastructure', // Database, filesystem, resource errors
  PARTNER_API: 'partner_api', // External partner API errors
  UNKNOWN: 'unknown' // Unclassified errors
});

// The options the plugin is applied with here; a sharded deployment sets `sharded: true`.
const PLUGIN_OPTIONS = Object.freeze({
  sharded: process.env.TASK_TRACKER_SHARDED === 'true'
});

/** The Mongoose schema's schema, with the plugin applied last. `SchemaClass` is the Schema of the
 * Mongoose in use (tests build it with Mongoose 8 and 9). */
function createTaskTrackerSchema(SchemaClass = Schema, pluginOptions = PLUGIN_OPTIONS) {
  const taskTrackerSchema = new SchemaClass({
    // === Universal Task Identity ===
    taskId: {
      type: String,
      required: true,
      trim: true
      // Format: "{queueType}:{naturalKey}"
      // Examples:
      //   "partner_tasks:SATLOC:695d:02220710"
      //   "jobs:12345:userId123:process"
      //   "notifications:userId456:EMAIL:8a3f9c2e"
    },

    // === Execution Identity (Idempotency) ===
    executionId: {
      type: String,
      required: true,
      trim: true
      // UUID v4 - unique per execution attempt (unique index executionId_1, see the plugin)
      // New executionId generated for each retry
    },

    // === Queue Context ===
    queueName: {
      type: String,
      required: true,
      trim: true
      // e.g., 'dev_partner_tasks', 'dev_jobs', 'partner_tasks'
    },

    messageVersion: {
      type: String,
      default: '1.0',
      trim: true
      // Allows schema evolution without breaking existing messages
    },

    // === Processing Status ===
    status: {
      type: String,
      enum: Object.values(TaskTrackerStatus),
      default: TaskTrackerStatus.QUEUED,
      required: true
    },

    // === Lifecycle Timestamps ===
    enqueuedAt: {
      type: Date,
      required: true,
      default: Date.now
    },

    processingStartedAt: {
      type: Date
      // Used for stuck task detection
    },

    completedAt: {
      type: Date
    },

    failedAt: {
      type: Date
    },

    archivedAt: {
      type: Date
    },

    // === Retry Logic ===
    retryCount: {
      type: Number,
      default: 0
    },

    maxRetries: {
      type: Number,
      default: 5
    },

    lastRetryAt: {
      type: Date
    },

    // === Error Tracking ===
    errorMessage: {
      type: String
    },

    errorCategory: {
      type: String,
      enum: Object.values(ErrorCategory)
    },

    errorStack: {
      type: String
    },

    // === Domain-Specific Data ===
    metadata: {
      type: SchemaClass.Types.Mixed,
      default: {}
      // Flexible JSON for queue-specific fields:
      // Partner tasks: { partnerCode, aircraftId, logId, customerId, logFileName }
      // Jobs: { jobId, userId, jobType, assignId }
      // Notifications: { userId, notificationType, recipientEmail }
    },

    // === Archival Info ===
    archivedReason: {
      type: String,
      trim: true
      // e.g., "Manual retry initiated", "Auto-archived after 7 days", "Non-recoverable error"
    },

    archivedBy: {
      type: String,
      trim: true
      // User ID or system process that archived the task
    },

    // === Audit Trail ===
    createdAt: {
      type: Date,
      default: Date.now
    },

    updatedAt: {
      type: Date,
      default: Date.now
    }
  });

  // === INDEXES ===
  // The Mongoose schema's field-level `index: true` declarations are gone: the collection's indexes are
  // exactly the set both services declare, which the plugin adds with MongoDB's default names:
  //   taskId_1_executionId_1 (unique)        primary constraint (prevents duplicate processing)
  //   taskId_1_status_1_enqueuedAt_-1        deduplication: recent executions of a task
  //   queueName_1_status_1_enqueuedAt_-1     queue operations by status
  //   status_1_processingStartedAt_1         stuck detection across queues
  //   errorCategory_1_failedAt_-1            error analysis
  //   taskId_1_createdAt_1                   retry chain
  //   status_1_updatedAt_-1                  monitoring by status
  //   executionId_1 (unique)                 lookups by execution
  //   activeKey_1 (unique, partial)          one active execution per task
  //   queueName_1_status_1_processingStartedAt_1   findStuckTasks(queueName)
  //   expiresAt_1 (TTL 0)                    retention

  // === METHODS ===

  // Update updatedAt on save. No `next` parameter: Mongoose 9 no longer passes one, and the
  // seed's `function (next) { ...; next(); }` fails there with "next is not a function".
  taskTrackerSchema.pre('save', function () {
    this.updatedAt = new Date();
  });

  // Instance method: Check if task can be retried
  taskTrackerSchema.methods.canRetry = function () {
    return this.retryCount < this.maxRetries;
  };

  // Instance method: Check if task is stuck
  taskTrackerSchema.methods.isStuck = function (timeoutMs = 30 * 60 * 1000) {
    if (this.status !== TaskTrackerStatus.PROCESSING) {
      return false;
    }
    if (!this.processingStartedAt) {
      return false;
    }
    return Date.now() - this.processingStartedAt.getTime() > timeoutMs;
  };

  // Static method: Find retry chain
  taskTrackerSchema.statics.findRetryChain = async function (taskId) {
    return this.find({ taskId })
      .sort({ createdAt: 1 })
      .lean();
  };

  // Static method: Find stuck tasks
  taskTrackerSchema.statics.findStuckTasks = async function (queueName, timeoutMs = 30 * 60 * 1000) {
    const threshold = new Date(Date.now() - timeoutMs);
    return this.find({
      queueName,
      status: TaskTrackerStatus.PROCESSING,
      processingStartedAt: { $lt: threshold }
    }).lean();
  };

  // Static method: Get queue statistics
  taskTrackerSchema.statics.getQueueStats = async function (queueName) {
    const stats = await this.aggregate([
      { $match: { queueName } },
      {
        $group: {
          _id: '$status',
          count: { $sum: 1 }
        }
      }
    ]);

    const result = {
      queued: 0,
      processing: 0,
      completed: 0,
      failed: 0,
      dlq: 0,
      archived: 0
    };

    stats.forEach(stat => {
      result[stat._id.toLowerCase()] = stat.count;
    });

    return result;
  };

  // Applied last: it replaces the index declarations and its hooks run after the ones above.
  taskTrackerSchema.plugin(taskTrackerPlugin, pluginOptions);
  return taskTrackerSchema;
}

// 'Task_Tracker' -> collection 'task_trackers' (Mongoose lowercases and pluralizes the name);
// the tests print Model.collection.name to confirm it.
module.exports = mongoose.model('Task_Tracker', createTaskTrackerSchema());
module.exports.TaskTrackerStatus = TaskTrackerStatus;
module.exports.ErrorCategory = ErrorCategory;
module.exports.createTaskTrackerSchema = createTaskTrackerSchema;
module.exports.taskTrackerPlugin = taskTrackerPlugin;
