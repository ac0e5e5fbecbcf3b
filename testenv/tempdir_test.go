package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

func TestSweepStale(t *testing.T) {
	// A PID that certainly belonged to a process that has exited.
	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	mk := func(name, owner string) string {
		dir := filepath.Join(root, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if owner != "" {
			if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(owner), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	dead := mk("statefeed-pg-dead", strconv.Itoa(done.Process.Pid))
	alive := mk("statefeed-pg-alive", strconv.Itoa(os.Getpid()))
	unknown := mk("statefeed-pg-unknown", "")
	other := mk("statefeed-kafka-dead", strconv.Itoa(done.Process.Pid))

	sweepStale(filepath.Join(root, "statefeed-pg-*"))

	for dir, want := range map[string]bool{dead: false, alive: true, unknown: true, other: true} {
		_, err := os.Stat(dir)
		if exists := err == nil; exists != want {
			t.Errorf("%s: exists = %v, want %v", filepath.Base(dir), exists, want)
		}
	}
}
