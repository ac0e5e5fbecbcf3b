package snapshot

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Reason says why a job exists.
type Reason string

const (
	// Initial is the snapshot of every entity taken when the bridge
	// creates its slot.
	Initial Reason = "initial"
	// Requested is a backfill asked for with bridge backfill.
	Requested Reason = "requested"
	// Truncated tombstones an entity's keys after a TRUNCATE of its table.
	Truncated Reason = "truncate"
	// Recovered rebuilds every entity after a lost slot was recreated.
	Recovered Reason = "recover"
)

// State is where a job stands.
type State string

const (
	Running State = "running"
	Done    State = "done"
	Failed  State = "failed"
)

// Job is one backfill: the chunked reads of its tables, then, when asked,
// the reconcile of its topics. Its JSON form is the record the bridge keeps
// in the progress topic, under the job's ID, after every chunk Kafka
// acknowledged: a restart resumes from there.
type Job struct {
	ID        string    `json:"id"`
	Reason    Reason    `json:"reason"`
	Entities  []string  `json:"entities"`
	Reconcile bool      `json:"reconcile"`
	State     State     `json:"state"`
	Error     string    `json:"error,omitempty"`
	Created   time.Time `json:"created"`
	Finished  time.Time `json:"finished,omitzero"`

	Tables []*TableJob `json:"tables,omitempty"`
	// Topics holds, per topic to reconcile, the end offsets of its
	// partitions when the job began: records below them are older than
	// the job.
	Topics map[string]*TopicJob `json:"topics,omitempty"`

	Rows       int64 `json:"rows"`       // records published from chunks
	Tombstones int64 `json:"tombstones"` // records published by the reconcile
}

// TableJob is the chunked read of one table.
type TableJob struct {
	Table    string   `json:"table"`    // schema.name
	Entities []string `json:"entities"` // the job's entities mapped from the table
	Estimate int64    `json:"estimate"` // rows, from the planner's statistics; 0 when unknown
	Ranges   []*Range `json:"ranges,omitempty"`
	Planned  bool     `json:"planned"` // Ranges are set
}

// Range is a slice of a table's chunk key, read chunk after chunk in key
// order. From and To bound the first key column (From inclusive, To
// exclusive, nil for no bound); After is the key of the last row whose
// chunk Kafka acknowledged.
type Range struct {
	From  *string  `json:"from,omitempty"`
	To    *string  `json:"to,omitempty"`
	After []string `json:"after,omitempty"`
	Rows  int64    `json:"rows"`
	Done  bool     `json:"done"`
}

// TopicJob is the reconcile of one topic.
type TopicJob struct {
	Entity string  `json:"entity"`
	Table  string  `json:"table"`
	Starts []int64 `json:"starts"` // end offsets per partition when the job began
	Passes int     `json:"passes"` // passes the reconcile is split into; 0 until it starts
	Done   int     `json:"done"`   // passes finished
}

// Finished reports whether the job needs no more work.
func (j *Job) finished() bool { return j.State == Done || j.State == Failed }

// chunksDone reports whether every range of every table has been read.
func (j *Job) chunksDone() bool {
	for _, t := range j.Tables {
		if !t.Planned {
			return false
		}
		for _, r := range t.Ranges {
			if !r.Done {
				return false
			}
		}
	}
	return true
}

// rows returns the rows read so far from t.
func (t *TableJob) rows() int64 {
	var n int64
	for _, r := range t.Ranges {
		n += r.Rows
	}
	return n
}

// clone returns a deep copy, for writing while the job goes on.
func (j *Job) clone() *Job {
	b, err := json.Marshal(j)
	if err != nil {
		panic(err) // a Job always marshals
	}
	var c Job
	if err := json.Unmarshal(b, &c); err != nil {
		panic(err)
	}
	return &c
}

// Store keeps jobs in a compacted Kafka topic, one record per job keyed by
// its ID. Nothing is written to the source database.
type Store interface {
	Save(ctx context.Context, j *Job) error
	Load(ctx context.Context) ([]*Job, error)
}

// Kafka is what a KafkaStore needs of the Kafka client: publish.Producer
// has it.
type Kafka interface {
	EndOffsets(ctx context.Context, topic string) ([]int64, error)
	Put(ctx context.Context, topic string, key, value []byte) error
	Scan(ctx context.Context, topic string, ends []int64, fn func(partition int32, offset int64, key, value []byte) error) error
}

// KafkaStore is a Store in a topic.
type KafkaStore struct {
	Kafka Kafka
	Topic string
}

// Save writes j and waits for Kafka's acknowledgement.
func (s KafkaStore) Save(ctx context.Context, j *Job) error {
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if err := s.Kafka.Put(ctx, s.Topic, []byte(j.ID), b); err != nil {
		return fmt.Errorf("save backfill %s: %w", j.ID, err)
	}
	return nil
}

// Load reads the latest record of every job, oldest job first.
func (s KafkaStore) Load(ctx context.Context) ([]*Job, error) {
	ends, err := s.Kafka.EndOffsets(ctx, s.Topic)
	if err != nil {
		return nil, err
	}
	byID := map[string]*Job{}
	err = s.Kafka.Scan(ctx, s.Topic, ends, func(_ int32, off int64, key, value []byte) error {
		if value == nil {
			delete(byID, string(key))
			return nil
		}
		var j Job
		if err := json.Unmarshal(value, &j); err != nil {
			return fmt.Errorf("backfill progress topic %s: record at offset %d (key %q) is not a backfill job: %w", s.Topic, off, key, err)
		}
		byID[string(key)] = &j
		return nil
	})
	if err != nil {
		return nil, err
	}
	jobs := make([]*Job, 0, len(byID))
	for _, j := range byID {
		jobs = append(jobs, j)
	}
	slices.SortFunc(jobs, func(a, b *Job) int { return a.Created.Compare(b.Created) })
	return jobs, nil
}
