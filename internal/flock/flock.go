// Package flock serialises work across processes with an exclusive file
// lock: test set-ups that install a tool once per machine use it, since
// several test binaries may install the same tool at the same moment.
package flock

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// Do runs f holding an exclusive flock on path (created if missing).
func Do(path string, f func() error) error {
	l, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer l.Close()
	for {
		err = syscall.Flock(int(l.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("lock %s: %w", path, err)
	}
	defer syscall.Flock(int(l.Fd()), syscall.LOCK_UN)
	return f()
}
