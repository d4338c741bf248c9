//go:build !unix

package policyserver

import "errors"

func descriptorLimit() (cur, hard uint64, err error) {
	return 0, 0, errors.New("no RLIMIT_NOFILE on this system")
}
