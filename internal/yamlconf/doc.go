// Package yamlconf decodes YAML configuration strictly and reports every
// problem at once, each with its file, line and YAML path.
//
// Configuration is parsed into a yaml.Node tree first (Parse), so positions
// survive decoding. Decode then fills a struct from a mapping node using
// `yaml:"name"` field tags and never stops at the first problem: unknown keys
// (with a did-you-mean among the known ones), duplicate keys, values of the
// wrong type and missing required keys are all collected into Problems, which
// prints one problem a line, sorted, as
//
//	<file>:<line>: <yaml path>: <what is wrong>[; <what to do>]
//
// The package keeps no state and is safe for concurrent use.
package yamlconf
