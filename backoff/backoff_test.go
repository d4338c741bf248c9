package backoff

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

const ms = time.Millisecond

func TestBackoff(t *testing.T) {
	// Each step is one call: "next", "reset", or "failed" after a try that
	// ran for ran; want is the delay it returns (none for reset).
	type step struct {
		call string
		ran  time.Duration
		want time.Duration
	}
	tests := []struct {
		name  string
		b     Backoff
		steps []step
	}{
		{"doubles up to Max", Backoff{Min: 100 * ms, Max: 500 * ms}, []step{
			{"next", 0, 100 * ms}, {"next", 0, 200 * ms}, {"next", 0, 400 * ms}, {"next", 0, 500 * ms}, {"next", 0, 500 * ms},
		}},
		{"reset starts over", Backoff{Min: time.Second, Max: 30 * time.Second}, []step{
			{"next", 0, time.Second}, {"next", 0, 2 * time.Second}, {"reset", 0, 0}, {"next", 0, time.Second}, {"next", 0, 2 * time.Second},
		}},
		{"a failure after a long run is a first failure (Stable defaults to Max)", Backoff{Min: time.Second, Max: 30 * time.Second}, []step{
			{"failed", ms, time.Second}, {"failed", ms, 2 * time.Second}, {"failed", ms, 4 * time.Second},
			{"failed", 30 * time.Second, 8 * time.Second}, // not longer than Max
			{"failed", 31 * time.Second, time.Second}, {"failed", 0, 2 * time.Second},
		}},
		{"Stable of its own", Backoff{Min: 100 * ms, Max: 5 * time.Second, Stable: 10 * time.Second}, []step{
			{"failed", 6 * time.Second, 100 * ms}, {"failed", 6 * time.Second, 200 * ms}, {"failed", 11 * time.Second, 100 * ms},
		}},
		{"a try that failed at once after a reset", Backoff{Min: 100 * ms, Max: 5 * time.Second}, []step{
			{"failed", 0, 100 * ms}, {"reset", 0, 0}, {"next", 0, 100 * ms}, {"next", 0, 200 * ms},
		}},
		{"Min above Max waits Max after the first", Backoff{Min: 2 * time.Second, Max: time.Second}, []step{
			{"next", 0, 2 * time.Second}, {"next", 0, time.Second},
		}},
		{"the zero Backoff never waits", Backoff{}, []step{{"next", 0, 0}, {"failed", time.Hour, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.b
			for i, s := range tt.steps {
				var got time.Duration
				switch s.call {
				case "next":
					got = b.Next()
				case "failed":
					got = b.Failed(s.ran)
				case "reset":
					b.Reset()
					continue
				}
				if got != s.want {
					t.Fatalf("step %d (%s after %v): %v, want %v", i, s.call, s.ran, got, s.want)
				}
			}
		})
	}
}

func TestWait(t *testing.T) {
	tests := []struct {
		name    string
		d       time.Duration
		cancel  time.Duration // when ctx ends; 0: never
		want    error
		elapsed time.Duration
	}{
		{"waits the delay", 3 * time.Second, 0, nil, 3 * time.Second},
		{"ends with ctx", 3 * time.Second, time.Second, context.Canceled, time.Second},
		{"no delay", 0, 0, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				if tt.cancel > 0 {
					time.AfterFunc(tt.cancel, cancel)
				}
				start := time.Now()
				if err := Wait(ctx, tt.d); !errors.Is(err, tt.want) {
					t.Errorf("Wait: %v, want %v", err, tt.want)
				}
				if took := time.Since(start); took != tt.elapsed {
					t.Errorf("took %v, want %v", took, tt.elapsed)
				}
			})
		})
	}
}
