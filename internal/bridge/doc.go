// Package bridge is the bridge daemon behind the command line: it loads the
// configuration, checks the mappings against the live catalog, prepares the
// publication, the slot and the topics, and runs the pipeline until its
// context ends.
package bridge
