// Package atomicfile replaces a file in one step: the new content is written
// to a temporary file in the same folder and renamed over the old one, so a
// process reading the file at that moment (an agent starting, a Policy
// Server re-reading its registrations, a learner opening a capture) sees the
// old file or the new one, never half of one. It imports no package of the
// project, so that the lowest packages (conf, trace) can use it.
package atomicfile

import (
	"bufio"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFile is os.WriteFile made atomic: path ends up holding data with
// permissions perm, or, on error, is left as it was.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return Write(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// Write replaces path with what write writes (through a buffer, so write
// may make many small writes). An error from write, or from any step after
// it, leaves path as it was and removes the temporary file. The error is a
// *fs.PathError naming path, as os.WriteFile's would, so callers that
// place errors in their own words can take its Err.
func Write(path string, perm fs.FileMode, write func(io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	// A dot name keeps the temporary file out of listings and globs such
	// as *.yaml while it exists.
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return &fs.PathError{Op: "write", Path: path, Err: err}
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = &fs.PathError{Op: "write", Path: path, Err: err}
		}
	}()
	bw := bufio.NewWriter(tmp)
	if err = write(bw); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return err
	}
	// CreateTemp makes the file 0600 whatever the umask; Chmod gives the
	// caller's permissions exactly (the umask does not apply to Chmod).
	if err = tmp.Chmod(perm); err != nil {
		return err
	}
	// Sync before the rename: otherwise a crash can leave the new name
	// pointing at an empty file on file systems that delay data writes.
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
