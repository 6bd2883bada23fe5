package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// defaultStoreDir is where the embedded store lives for a gateway run as
// a service; a user who cannot write there gets their state directory.
const defaultStoreDir = "/var/lib/flowgate"

// storeFile is the embedded store's file in its directory: the usage
// ledger, the admin API's quota policies and the budget windows.
const storeFile = "flowgate.db"

// openStore opens the embedded store (bbolt) under dir, or under the first
// writable default, and says at start-up which it chose. bbolt locks the
// file: a second process on the same directory fails here, in two seconds,
// rather than waiting forever.
func openStore(dir string, log *zap.Logger) (*bbolt.DB, error) {
	candidates := []string{dir}
	key := "metering.store_dir"
	if dir == "" {
		candidates = []string{defaultStoreDir}
		if sd := userStateDir(); sd != "" {
			candidates = append(candidates, sd)
		}
		// A user without a home (nobody) still gets a gateway: the state
		// then lasts until the temp directory is cleaned, said at start-up.
		candidates = append(candidates, filepath.Join(os.TempDir(), "flowgate-state-"+strconv.Itoa(os.Getuid())))
		key = "metering.store_dir (default)"
	}
	var errs []error
	for _, d := range candidates {
		if err := writableDir(d); err != nil {
			errs = append(errs, err)
			continue
		}
		if strings.HasPrefix(d, os.TempDir()) && dir == "" {
			// A shared temp directory: another user could have made it
			// first and would then control the quota policies.
			if err := ownedPrivate(d); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		path := filepath.Join(d, storeFile)
		db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 2 * time.Second})
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("%s: %s is locked by another flowgate process; give each replica its own store_dir, or share state through redis.addr", key, path)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: open %s: %w", key, path, err)
		}
		if strings.HasPrefix(d, os.TempDir()) && dir == "" {
			log.Warn("embedded store in the temp directory: no writable /var/lib/flowgate or home; usage and quota state last until it is cleaned (set metering.store_dir)", zap.String("path", path))
		} else {
			log.Info("embedded store for the usage ledger and quotas (no redis.addr)", zap.String("path", path))
		}
		return db, nil
	}
	return nil, fmt.Errorf("%s: no writable directory: %w (set metering.store_dir or %s)", key, errors.Join(errs...), "FLOWGATE_METERING_STORE_DIR")
}

// userStateDir is $XDG_STATE_HOME/flowgate, or ~/.local/state/flowgate.
func userStateDir() string {
	if x := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "flowgate")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "flowgate")
	}
	return ""
}

// writableDir creates d if needed and checks that a file can be made in it.
func writableDir(d string) error {
	if err := os.MkdirAll(d, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(d, ".probe-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

// redisOrNil keeps a nil *redis.Client from becoming a non-nil interface.
func redisOrNil(c *redis.Client) redis.UniversalClient {
	if c == nil {
		return nil
	}
	return c
}

// ownedPrivate checks that d belongs to this process's user and that no
// one else may write in it.
func ownedPrivate(d string) error {
	fi, err := os.Lstat(d)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is not a private directory of this user", d)
	}
	return nil
}
