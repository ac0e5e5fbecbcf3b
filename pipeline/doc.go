// Package pipeline wires the stages of the bridge: it reads changes from a
// cdc source, projects them through the mappings, publishes the records and
// confirms source positions back to the replication slot.
//
// The no-loss guarantee lives here. Every transaction's records are counted
// as they are produced; a transaction's end LSN is confirmed to the slot
// only when all of its records and all of the records of every earlier
// transaction have been acknowledged by Kafka. A record that fails, a
// mapping error or a TRUNCATE the mappings do not allow stops the pipeline
// before the slot passes the change, so a restart sees it again.
package pipeline
