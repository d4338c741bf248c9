package procname

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// The test binary plays a launched process when this is set: it names
// itself, says so on stdout, and waits for its stdin to close.
const asChild = "AGENTLAB_PROCNAME_TEST_CHILD"

func TestMain(m *testing.M) {
	if name := os.Getenv(asChild); name != "" {
		if err := Set(name); err != nil {
			os.Stdout.WriteString("error: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("named\n")
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{IISWorker, true}, {IISLLAWP, true}, {Httpd, true}, {ApacheLLAWP, true}, {PolicyServer, true},
		{strings.Repeat("x", MaxLen), true},
		{strings.Repeat("x", MaxLen+1), false},
		{"", false},
	}
	for _, tt := range tests {
		if err := Check(tt.name); (err == nil) != tt.ok {
			t.Errorf("Check(%q) = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

func TestModel(t *testing.T) {
	if got := Model("iis"); got != (WebServer{Parent: WAS, Worker: "w3wp.exe", LLAWP: "LLAWP.exe"}) {
		t.Errorf("IIS: %+v", got)
	}
	if got := Model("apache"); got != (WebServer{Parent: "httpd", Worker: "httpd", LLAWP: "LLAWP"}) {
		t.Errorf("Apache: %+v", got)
	}
}

// A process started with Command and named with Set shows the name in
// /proc/PID/comm (ps, top, ss), in every thread's comm, and as argv[0] in
// /proc/PID/cmdline (ps -ef).
func TestLaunchedProcessShowsItsName(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the names are Linux's /proc")
	}
	for _, name := range []string{IISWorker, IISLLAWP, Httpd, ApacheLLAWP} {
		t.Run(name, func(t *testing.T) {
			cmd := Command(os.Args[0], name, "-test.run=^$")
			cmd.Env = append(os.Environ(), asChild+"="+name)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				stdin.Close()
				if err := cmd.Wait(); err != nil {
					t.Errorf("the child: %v", err)
				}
			}()
			if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "named\n" {
				t.Fatalf("the child said %q", line)
			}
			dir := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid))
			if comm := read(t, filepath.Join(dir, "comm")); comm != name {
				t.Errorf("comm %q, want %q", comm, name)
			}
			tasks, err := os.ReadDir(filepath.Join(dir, "task"))
			if err != nil {
				t.Fatal(err)
			}
			for _, task := range tasks {
				if comm := read(t, filepath.Join(dir, "task", task.Name(), "comm")); comm != name {
					t.Errorf("thread %s: comm %q, want %q", task.Name(), comm, name)
				}
			}
			args := strings.Split(strings.TrimRight(read(t, filepath.Join(dir, "cmdline")), "\x00"), "\x00")
			if args[0] != name || args[1] != "-test.run=^$" {
				t.Errorf("cmdline %q, want %s and its arguments", args, name)
			}
		})
	}
}

func TestSetRefusesWhatTheKernelWouldCut(t *testing.T) {
	if err := Set("a-name-too-long-for-comm"); err == nil {
		t.Error("Set of a 24-byte name: no error")
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(string(b), "\n")
}
