package tli

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// The key log is TLI's SSLKEYLOGFILE: one line per session,
//
//	TLI_SESSION <client nonce hex> <client-to-server key hex> <server-to-client key hex>
//
// The client nonce is in the clear ClientHello, so a dissector can match a
// captured connection to its line; the keys are the AES-256-GCM keys of
// each direction (nonce: 4 zero bytes then a 64-bit big-endian counter
// from 0, per direction; additional data: the frame type byte). Lines
// starting with # and blank lines are comments.
//
// Anyone holding the file reads every request of the sessions it lists,
// passwords and session tokens included: it exists to show learners what
// the protocol carries, and is never written unless asked for.
const KeyLogLabel = "TLI_SESSION"

// KeyLogEntry is one session of a key log.
type KeyLogEntry struct {
	ClientNonce []byte
	C2S, S2C    []byte // AES-256 keys
}

// writeKeyLog writes the whole line with one Write: with the file opened
// O_APPEND (OpenKeyLog), lines from several goroutines and several Policy
// Server processes sharing the file land whole, never interleaved.
func writeKeyLog(w io.Writer, clientNonce []byte, k keyBytes) error {
	line := make([]byte, 0, len(KeyLogLabel)+3+2*(len(clientNonce)+len(k.c2s)+len(k.s2c))+1)
	line = append(line, KeyLogLabel...)
	line = append(line, ' ')
	line = hex.AppendEncode(line, clientNonce)
	line = append(line, ' ')
	line = hex.AppendEncode(line, k.c2s)
	line = append(line, ' ')
	line = hex.AppendEncode(line, k.s2c)
	line = append(line, '\n')
	_, err := w.Write(line)
	return err
}

// OpenKeyLog opens (creating with mode 0600) a key log for appending. A
// file others can read is refused rather than filled with keys.
func OpenKeyLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("key log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("key log %s: %w", path, err)
	}
	if fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 {
		f.Close()
		return nil, fmt.Errorf("key log %s: mode %#o lets others read session keys; chmod 600 it or choose another file", path, fi.Mode().Perm())
	}
	return f, nil
}

// ReadKeyLogFile reads a key log; errors name the file and line.
func ReadKeyLogFile(path string) ([]KeyLogEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("key log: %w", err)
	}
	defer f.Close()
	return ParseKeyLog(f, path)
}

// ParseKeyLog reads a key log; name is what errors call the input. A
// client nonce listed twice must carry the same keys both times (two
// processes may log one session); other keys for it are an error, since
// one of the two lines would decrypt nothing.
func ParseKeyLog(r io.Reader, name string) ([]KeyLogEntry, error) {
	var out []KeyLogEntry
	seen := map[string]int{} // client nonce -> line
	sc := bufio.NewScanner(r)
	// A client nonce may be as long as a ClientHello allows (the server
	// asks only for 16 bytes or more), so a line may be as long as two
	// frames in hex.
	sc.Buffer(nil, 4*MaxFrame+4096)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		e, err := parseKeyLogLine(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		k := string(e.ClientNonce)
		if first, ok := seen[k]; ok {
			prev := out[first]
			if !bytes.Equal(prev.C2S, e.C2S) || !bytes.Equal(prev.S2C, e.S2C) {
				return nil, fmt.Errorf("%s:%d: client nonce %x has other keys than on an earlier line", name, n, e.ClientNonce)
			}
			continue
		}
		seen[k] = len(out)
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%s:%d: line longer than %d bytes", name, n+1, 4*MaxFrame+4096)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

func parseKeyLogLine(line string) (KeyLogEntry, error) {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != KeyLogLabel {
		return KeyLogEntry{}, fmt.Errorf("want a line %q, got %q", KeyLogLabel+" <client nonce hex> <c2s key hex> <s2c key hex>", clip(line))
	}
	if len(f) != 4 {
		return KeyLogEntry{}, fmt.Errorf("%s has %d fields, want 3 (client nonce, client-to-server key, server-to-client key)", KeyLogLabel, len(f)-1)
	}
	var e KeyLogEntry
	for i, p := range []struct {
		what string
		dst  *[]byte
		min  int
		max  int // -1: no bound
	}{
		{"client nonce", &e.ClientNonce, 16, -1},
		{"client-to-server key", &e.C2S, 32, 32},
		{"server-to-client key", &e.S2C, 32, 32},
	} {
		b, err := hex.DecodeString(f[i+1])
		if err != nil {
			return KeyLogEntry{}, fmt.Errorf("%s %q is not hex: %w", p.what, clip(f[i+1]), err)
		}
		if len(b) < p.min || p.max >= 0 && len(b) > p.max {
			want := fmt.Sprintf("%d", p.min)
			if p.max < 0 {
				want = fmt.Sprintf("at least %d", p.min)
			}
			return KeyLogEntry{}, fmt.Errorf("%s is %d bytes, want %s", p.what, len(b), want)
		}
		*p.dst = b
	}
	return e, nil
}

// clip keeps an error message readable when the input is a long line of
// garbage.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
