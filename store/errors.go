package store

import (
	"fmt"

	"github.com/redis/go-redis/v9"
)

// IsNoPermission reports whether Redis refused a command, key or channel
// because the user's ACL does not allow it (a NOPERM reply).
func IsNoPermission(err error) bool { return redis.HasErrorPrefix(err, "NOPERM") }

// PermissionError says in one line that the Redis user lacks a permission,
// in Redis's words, when err is a NOPERM refusal; other errors pass
// unchanged.
func PermissionError(err error) error {
	if !IsNoPermission(err) {
		return err
	}
	return fmt.Errorf("redis user lacks permission: %w; see docs/security.md", err)
}
