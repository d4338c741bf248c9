package atomicfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWrite(t *testing.T) {
	errWrite := errors.New("the writer failed")
	tests := []struct {
		name    string
		old     string // content of the file before; "" for no file
		oldPerm fs.FileMode
		target  func(dir string) string // the path written; default dir/f.conf
		perm    fs.FileMode
		write   func(io.Writer) error
		want    string // content after; the old content when the write fails
		wantErr error  // errors.Is; nil for success
		errText string // in the error, when wantErr is nil but an error is expected
	}{
		{name: "new file", perm: 0o644, write: text("hello\n"), want: "hello\n"},
		{name: "replaces a file", old: "old\n", oldPerm: 0o644, perm: 0o644, write: text("new\n"), want: "new\n"},
		{name: "permissions of the caller, not of the old file", old: "old\n", oldPerm: 0o644, perm: 0o600, write: text("secret\n"), want: "secret\n"},
		{name: "permissions wider than CreateTemp's", perm: 0o664, write: text("x"), want: "x"},
		{name: "empty content", old: "old\n", oldPerm: 0o644, perm: 0o644, write: text(""), want: ""},
		{name: "many small writes", perm: 0o644, write: func(w io.Writer) error {
			for range 10000 {
				if _, err := io.WriteString(w, "ab"); err != nil {
					return err
				}
			}
			return nil
		}, want: strings.Repeat("ab", 10000)},
		{name: "failed write leaves the old file", old: "old\n", oldPerm: 0o640, perm: 0o644, write: func(w io.Writer) error {
			io.WriteString(w, "half of ")
			return errWrite
		}, want: "old\n", wantErr: errWrite},
		{name: "failed write creates no file", perm: 0o644, write: func(io.Writer) error { return errWrite }, wantErr: errWrite},
		{name: "missing folder", perm: 0o644, write: text("x"), target: func(dir string) string { return filepath.Join(dir, "nope", "f.conf") }, wantErr: fs.ErrNotExist},
		{name: "rename over a folder fails", perm: 0o644, write: text("x"), target: func(dir string) string {
			sub := filepath.Join(dir, "f.conf")
			os.MkdirAll(filepath.Join(sub, "child"), 0o755)
			return sub
		}, errText: "f.conf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f.conf")
			if tt.target != nil {
				path = tt.target(dir)
			}
			if tt.old != "" {
				if err := os.WriteFile(path, []byte(tt.old), tt.oldPerm); err != nil {
					t.Fatal(err)
				}
				os.Chmod(path, tt.oldPerm) // past the umask
			}
			err := Write(path, tt.perm, tt.write)
			failed := tt.wantErr != nil || tt.errText != ""
			switch {
			case !failed && err != nil:
				t.Fatalf("Write: %v", err)
			case failed && err == nil:
				t.Fatal("Write succeeded, want an error")
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("Write: %v, want %v", err, tt.wantErr)
			}
			if pe := (*fs.PathError)(nil); failed && (!errors.As(err, &pe) || pe.Path != path) {
				t.Errorf("error %q is not a *fs.PathError for %s", err, path)
			}
			assertNoTemp(t, dir)
			if failed && tt.old == "" {
				if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
					t.Errorf("a failed write created %s", path)
				}
				return
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("content %q, want %q", got, tt.want)
			}
			wantPerm := tt.perm
			if failed {
				wantPerm = tt.oldPerm
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != wantPerm {
				t.Errorf("permissions %v, want %v", fi.Mode().Perm(), wantPerm)
			}
		})
	}
}

func TestWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "SmHost.conf")
	for _, content := range []string{"first\n", "second\n"} {
		if err := WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != content {
			t.Errorf("content %q, want %q", got, content)
		}
	}
	assertNoTemp(t, filepath.Dir(path))
}

// TestWriteRelative: a bare file name is written in the current folder.
func TestWriteRelative(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := WriteFile("bare.conf", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile("bare.conf"); err != nil || string(got) != "x" {
		t.Errorf("bare.conf: %q, %v", got, err)
	}
	assertNoTemp(t, ".")
}

func text(s string) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := io.WriteString(w, s)
		return err
	}
}

// assertNoTemp fails when a temporary file of Write is left in dir.
func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
