package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ownerFile names the file in each temporary directory that holds the PID
// of the process that created it.
const ownerFile = "owner.pid"

// newTempDir creates a temporary directory for one resource of the given
// kind ("pg", "kafka") and records the creating process in it. It first
// removes directories of that kind whose creator no longer runs: a test
// binary killed by a timeout or a signal gets no chance to clean up.
func newTempDir(kind string) (string, error) {
	pattern := "statefeed-" + kind + "-"
	sweepStale(filepath.Join(os.TempDir(), pattern+"*"))
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// sweepStale removes the directories matching glob whose owner process has
// exited. Directories without a readable owner are left alone. Errors are
// ignored: sweeping is a courtesy.
func sweepStale(glob string) {
	dirs, _ := filepath.Glob(glob)
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(dir)
		}
	}
}

// removeTempDir removes a directory made by newTempDir.
func removeTempDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}
