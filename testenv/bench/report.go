package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// result is one row of the table: a workload's bridge measurement and its
// ceiling, measured in the same run on the same data.
type result struct {
	workload string
	rows     int // row changes of the workload

	// The bridge.
	rate    float64       // rows/s end to end
	cpu     time.Duration // the bridge process's user + system time
	peakRSS int64         // bytes
	latency []time.Duration

	// The ceiling.
	ceiling     string
	ceilingRate float64 // rows/s

	// Where the CPU went in the drains of a stream workload.
	bridgeDrain, ceilingDrain *drain
}

// setBridge records the bridge's measurement: rows in took, and what its
// process used.
func (r *result) setBridge(rows int, took time.Duration, u usage) {
	r.rate = float64(rows) / took.Seconds()
	r.cpu = u.cpu
	r.peakRSS = u.peakRSS
}

// ratio is the bridge's rate over the ceiling's, or 0 when either is
// missing.
func (r result) ratio() float64 {
	if r.rate == 0 || r.ceilingRate == 0 {
		return 0
	}
	return r.rate / r.ceilingRate
}

// cpuPerMillion is the bridge's CPU seconds per million rows.
func (r result) cpuPerMillion() float64 {
	if r.rows == 0 {
		return 0
	}
	return r.cpu.Seconds() / float64(r.rows) * 1e6
}

// summary is r on one line: every column but the workload that has a
// value, with its name.
func (r result) summary() string {
	var parts []string
	for i, c := range r.cells()[1:] {
		if c != "–" {
			parts = append(parts, header[i+1]+" "+c)
		}
	}
	return strings.Join(parts, ", ")
}

var header = []string{"workload", "rows", "bridge rows/s", "ceiling", "ceiling rows/s", "ratio", "bridge CPU s / M rows", "bridge peak RSS MiB", "latency p50 / p95 / p99 ms"}

// cells renders r as the table's columns.
func (r result) cells() []string {
	c := []string{r.workload, thousands(float64(r.rows)), "–", r.ceiling, thousands(r.ceilingRate), "–", "–", "–", "–"}
	if r.rate > 0 {
		c[2] = thousands(r.rate)
		c[6] = strconv.FormatFloat(r.cpuPerMillion(), 'f', 2, 64)
		c[7] = strconv.FormatFloat(float64(r.peakRSS)/(1<<20), 'f', 0, 64)
	}
	if x := r.ratio(); x > 0 {
		c[5] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	if len(r.latency) > 0 {
		var ms []string
		for _, d := range r.latency {
			ms = append(ms, strconv.FormatFloat(d.Seconds()*1000, 'f', 1, 64))
		}
		c[8] = strings.Join(ms, " / ")
	}
	return c
}

var cpuHeader = []string{"workload", "bridge drain s", "bridge CPU s", "its walsender CPU s", "broker CPU s", "pg_recvlogical drain s", "pg_recvlogical CPU s", "its walsender CPU s"}

// cpuCells renders where the CPU of r's drains went, or nil for a workload
// without drains.
func (r result) cpuCells() []string {
	b, c := r.bridgeDrain, r.ceilingDrain
	if b == nil || c == nil {
		return nil
	}
	s := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) }
	return []string{r.workload, s(b.wall), s(b.client), s(b.walsender), s(b.broker), s(c.wall), s(c.client), s(c.walsender)}
}

// tables returns the result table and, when there are drains, the table
// of where their CPU went, each as a header and rows.
func tables(results []result) [][][]string {
	main, cpu := [][]string{header}, [][]string{cpuHeader}
	for _, r := range results {
		main = append(main, r.cells())
		if c := r.cpuCells(); c != nil {
			cpu = append(cpu, c)
		}
	}
	if len(cpu) == 1 {
		return [][][]string{main}
	}
	return [][][]string{main, cpu}
}

// writeText writes the tables aligned for a terminal.
func writeText(w io.Writer, results []result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, t := range tables(results) {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		for _, cells := range t {
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
	}
	return tw.Flush()
}

// writeMarkdown writes the tables as Markdown tables. Every column but the
// first and the ceiling's name holds numbers, aligned right.
func writeMarkdown(w io.Writer, results []result) error {
	row := func(cells []string) string { return "| " + strings.Join(cells, " | ") + " |\n" }
	var b strings.Builder
	for i, t := range tables(results) {
		if i > 0 {
			b.WriteString("\n")
		}
		sep := make([]string, len(t[0]))
		for j := range sep {
			sep[j] = "---:"
			if j == 0 || t[0][j] == "ceiling" {
				sep[j] = "---"
			}
		}
		b.WriteString(row(t[0]))
		b.WriteString(row(sep))
		for _, cells := range t[1:] {
			b.WriteString(row(cells))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// thousands formats a non-negative number rounded to an integer with
// comma separators; zero is a dash.
func thousands(f float64) string {
	if f <= 0 {
		return "–"
	}
	s := strconv.FormatInt(int64(f+0.5), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
