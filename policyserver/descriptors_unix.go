//go:build unix

package policyserver

import "syscall"

// descriptorLimit is RLIMIT_NOFILE, soft and hard. Go raises the soft
// limit to the hard one at start-up, so the soft one is what is left.
func descriptorLimit() (cur, hard uint64, err error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, err
	}
	return uint64(rl.Cur), uint64(rl.Max), nil
}
