package procname

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

func set(name string) error {
	if err := os.WriteFile("/proc/self/comm", []byte(name), 0); err != nil {
		return fmt.Errorf("naming this process %s: %w", name, err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("naming this process's threads %s: %w", name, err)
	}
	for _, t := range tasks {
		// A thread may end between the listing and the write.
		err := os.WriteFile(filepath.Join("/proc/self/task", t.Name(), "comm"), []byte(name), 0)
		if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("naming thread %s of this process %s: %w", t.Name(), name, err)
		}
	}
	return nil
}
