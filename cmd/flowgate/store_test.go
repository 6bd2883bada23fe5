package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"
)

// One process per embedded store: a second one on the same directory
// fails at start-up with a message that says why, instead of hanging on
// bbolt's file lock.
func TestOpenStoreLocked(t *testing.T) {
	dir := t.TempDir()
	db, err := openStore(dir, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := os.Stat(filepath.Join(dir, storeFile)); err != nil {
		t.Fatal(err)
	}
	_, err = openStore(dir, zaptest.NewLogger(t))
	if err == nil || !strings.Contains(err.Error(), "locked by another flowgate process") {
		t.Fatalf("second open: %v", err)
	}
}

// A directory that cannot be written is named in the error.
func TestOpenStoreUnwritable(t *testing.T) {
	// Under a regular file: not writable even for root.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(file, "state")
	if _, err := openStore(dir, zaptest.NewLogger(t)); err == nil || !strings.Contains(err.Error(), "metering.store_dir") {
		t.Fatalf("unwritable dir: %v", err)
	}
}
