package policyserver

import (
	"strings"
	"testing"
)

func TestDescriptorWarning(t *testing.T) {
	cases := []struct {
		max       int
		cur, hard uint64
		want      string // "" for no warning
	}{
		{256, 20000, 20000, ""},
		{20000 - DescriptorHeadroom, 20000, 20000, ""},
		{50000, 20000, 20000, "--max-conns 50000 needs about 50064 file descriptors (one per connection and 64 for the server itself), but this process may open 20000 (RLIMIT_NOFILE; hard limit 20000): past about 19936 connections"},
		{256, 40, 1024, "past about 0 connections"},
	}
	for _, c := range cases {
		got := descriptorWarning(c.max, c.cur, c.hard)
		if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("descriptorWarning(%d, %d, %d) = %q, want %q", c.max, c.cur, c.hard, got, c.want)
		}
	}
	if CheckDescriptors(1) != "" {
		t.Errorf("this process cannot hold one connection: %s", CheckDescriptors(1))
	}
}
