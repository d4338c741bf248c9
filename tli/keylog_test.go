package tli

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/testsupport"
	"github.com/agentlab/agentlab/trace"
)

// lockedBuffer is a key log shared by a test server's connections.
type lockedBuffer = testsupport.Buffer

// wire is what one side of a recorded connection sent and received,
// rebuilt from its trace's payloads: the bytes a capture would hold.
func wire(t *testing.T, evs []trace.Event) (sent, received []byte) {
	t.Helper()
	for _, e := range evs {
		switch e.Op {
		case trace.OpSend:
			sent = append(sent, e.Data...)
		case trace.OpReceive:
			received = append(received, e.Data...)
		}
	}
	return sent, received
}

type wireFrame struct {
	typ     byte
	payload []byte
}

func frames(t *testing.T, stream []byte) []wireFrame {
	t.Helper()
	var out []wireFrame
	r := bytes.NewReader(stream)
	for r.Len() > 0 {
		typ, p, err := ReadFrame(r, nil)
		if err != nil {
			t.Fatalf("recorded stream: %v", err)
		}
		out = append(out, wireFrame{typ, append([]byte(nil), p...)})
	}
	return out
}

// openWithKey decrypts one captured frame as a dissector must, written out
// here rather than through direction so that the test pins the documented
// construction: nonce = 4 zero bytes ‖ 64-bit big-endian counter (from 0
// in each direction, one per sealed frame), additional data = the type byte.
func openWithKey(t *testing.T, key []byte, counter uint64, f wireFrame) []byte {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 12)
	binary.BigEndian.PutUint64(nonce[4:], counter)
	plain, err := gcm.Open(nil, nonce, f.payload, []byte{f.typ})
	if err != nil {
		t.Fatalf("sealed %s frame %d does not open with the logged key: %v", frameTypeName(f.typ), counter, err)
	}
	return plain
}

// TestKeyLogDecryptsRecordedSession records a real session's bytes, agent
// and administrator, and decrypts every sealed frame from the server's key
// log alone, matched by the client nonce of the clear ClientHello.
func TestKeyLogDecryptsRecordedSession(t *testing.T) {
	for _, admin := range []bool{false, true} {
		t.Run(fmt.Sprintf("admin=%v", admin), func(t *testing.T) {
			var kl lockedBuffer
			cfg := serverConfig()
			cfg.KeyLog = &kl
			cfg.AllowAdmin = true
			ts := startServer(t, cfg, echo)
			rec, tb := recorder("w3wp.exe")
			ccfg := clientConfig()
			if admin {
				ccfg = ClientConfig{Admin: true, TrustedHost: "smreghost"}
			}
			ccfg.Recorder = rec
			c := dial(t, ts.addr, ccfg)
			if r := ts.result(t); r.err != nil {
				t.Fatal(r.err)
			}
			reqs := []*tlipb.Request{
				{Body: &tlipb.Request_GetHostConfig{GetHostConfig: &tlipb.GetHostConfigRequest{Name: "hco.smps1"}}},
				isProtected("/protected/"),
				{Body: &tlipb.Request_Login{Login: &tlipb.LoginRequest{User: "user1", Password: "Passw0rd1"}}},
			}
			for _, req := range reqs {
				if _, err := c.Do(context.Background(), req); err != nil {
					t.Fatal(err)
				}
			}
			entries, err := ParseKeyLog(strings.NewReader(kl.String()), "keylog")
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 {
				t.Fatalf("key log has %d sessions, want 1:\n%s", len(entries), kl.String())
			}
			sent, received := wire(t, tb.events(t))
			c2s, s2c := frames(t, sent), frames(t, received)
			hello := &tlipb.ClientHello{}
			if c2s[0].typ != FrameClientHello || proto.Unmarshal(c2s[0].payload, hello) != nil {
				t.Fatalf("first frame sent is %s, want a readable ClientHello", frameTypeName(c2s[0].typ))
			}
			k := entries[0]
			if !bytes.Equal(k.ClientNonce, hello.ClientNonce) {
				t.Fatalf("key log nonce %x, ClientHello's %x", k.ClientNonce, hello.ClientNonce)
			}
			if len(c2s) != 2+len(reqs) || c2s[1].typ != FrameClientConfirm {
				t.Fatalf("client sent %d frames, want ClientHello, ClientConfirm and %d requests", len(c2s), len(reqs))
			}
			cc := &tlipb.ClientConfirm{}
			if err := proto.Unmarshal(openWithKey(t, k.C2S, 0, c2s[1]), cc); err != nil || len(cc.Proof) == 0 {
				t.Fatalf("ClientConfirm: %v", err)
			}
			for i, want := range reqs {
				got := &tlipb.Request{}
				if err := proto.Unmarshal(openWithKey(t, k.C2S, uint64(i+1), c2s[2+i]), got); err != nil {
					t.Fatal(err)
				}
				if Describe(got) != Describe(want) || got.Id != uint64(i+1) {
					t.Errorf("request %d decrypts to %q (id %d), want %q", i, Describe(got), got.Id, Describe(want))
				}
			}
			if len(s2c) != 1+len(reqs) || s2c[0].typ != FrameServerHello {
				t.Fatalf("client received %d frames, want ServerHello and %d responses", len(s2c), len(reqs))
			}
			for i, want := range reqs {
				got := &tlipb.Response{}
				if err := proto.Unmarshal(openWithKey(t, k.S2C, uint64(i), s2c[1+i]), got); err != nil {
					t.Fatal(err)
				}
				if got.Message != Describe(want) || got.Result != tlipb.Result_YES {
					t.Errorf("response %d decrypts to %v", i, got)
				}
			}
		})
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestKeyLogWriteFailureRefusesHandshake(t *testing.T) {
	cfg := serverConfig()
	cfg.KeyLog = failingWriter{}
	ts := startServer(t, cfg, echo)
	ctx := context.Background()
	_, err := Dial(ctx, ts.addr, clientConfig())
	var he *HandshakeError
	if !errors.As(err, &he) || he.Code != CodeServerHelloFailed {
		t.Fatalf("client: %v, want handshake error %d", err, CodeServerHelloFailed)
	}
	srv, _ := ts.refusal(t)
	if srv.Code != CodeServerHelloFailed || !strings.Contains(srv.Error(), "key log") || !strings.Contains(srv.Error(), "disk full") {
		t.Fatalf("server: %v", srv)
	}
}

func keyLine(nonce, c2s, s2c string) string {
	return strings.Join([]string{KeyLogLabel, nonce, c2s, s2c}, " ")
}

func TestParseKeyLog(t *testing.T) {
	n16, n32 := strings.Repeat("ab", 16), strings.Repeat("cd", 32)
	k1, k2 := strings.Repeat("01", 32), strings.Repeat("02", 32)
	for _, tc := range []struct {
		name, in string
		want     int    // entries
		err      string // error substring, "" for none
	}{
		{"empty", "", 0, ""},
		{"one", keyLine(n16, k1, k2) + "\n", 1, ""},
		{"comments and blanks", "# agentlab\n\n  \n" + keyLine(n16, k1, k2) + "\n", 1, ""},
		{"no final newline, CRLF", keyLine(n16, k1, k2) + "\r\n" + keyLine(n32, k1, k2), 2, ""},
		{"uppercase hex", keyLine(strings.ToUpper(n16), strings.ToUpper(strings.Repeat("ef", 32)), k2), 1, ""},
		{"lowercase label", strings.ToLower(KeyLogLabel) + " " + n16 + " " + k1 + " " + k2, 0, "keylog:1: want a line"},
		{"same session twice", keyLine(n16, k1, k2) + "\n" + keyLine(n16, k1, k2) + "\n", 1, ""},
		{"same nonce, other keys", keyLine(n16, k1, k2) + "\n" + keyLine(n16, k2, k1) + "\n", 0, "keylog:2: client nonce"},
		{"other label", "CLIENT_RANDOM " + n32 + " " + k1, 0, "keylog:1: want a line"},
		{"missing key", "# c\n" + KeyLogLabel + " " + n16 + " " + k1, 0, "keylog:2: TLI_SESSION has 2 fields"},
		{"extra field", keyLine(n16, k1, k2) + " x", 0, "keylog:1: TLI_SESSION has 4 fields"},
		{"short nonce", keyLine("abcd", k1, k2), 0, "keylog:1: client nonce is 2 bytes, want at least 16"},
		{"short key", keyLine(n16, k1[:62], k2), 0, "keylog:1: client-to-server key is 31 bytes, want 32"},
		{"long key", keyLine(n16, k1, k2+"00"), 0, "keylog:1: server-to-client key is 33 bytes, want 32"},
		{"not hex", keyLine(n16, k1, strings.Repeat("zz", 32)), 0, "keylog:1: server-to-client key \"zzzz"},
		{"odd hex", keyLine(n16+"a", k1, k2), 0, "keylog:1: client nonce"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKeyLog(strings.NewReader(tc.in), "keylog")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || len(got) != tc.want {
				t.Fatalf("%d entries, %v; want %d", len(got), err, tc.want)
			}
		})
	}
}

func TestWriteKeyLogRoundTrip(t *testing.T) {
	var b bytes.Buffer
	k := keyBytes{c2s: bytes.Repeat([]byte{1}, 32), s2c: bytes.Repeat([]byte{2}, 32)}
	nonce := bytes.Repeat([]byte{9}, 16)
	if err := writeKeyLog(&b, nonce, k); err != nil {
		t.Fatal(err)
	}
	want := keyLine(hex.EncodeToString(nonce), hex.EncodeToString(k.c2s), hex.EncodeToString(k.s2c)) + "\n"
	if b.String() != want {
		t.Fatalf("line %q, want %q", b.String(), want)
	}
	got, err := ParseKeyLog(&b, "keylog")
	if err != nil || len(got) != 1 || !bytes.Equal(got[0].ClientNonce, nonce) || !bytes.Equal(got[0].C2S, k.c2s) || !bytes.Equal(got[0].S2C, k.s2c) {
		t.Fatalf("%+v, %v", got, err)
	}
}

// TestOpenKeyLogAppendsWholeLines opens the file once per writer, as each
// Policy Server process does, and checks that concurrent sessions' lines
// never interleave.
func TestOpenKeyLogAppendsWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keylog")
	const writers, lines = 4, 200
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		f, err := OpenKeyLog(path)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer f.Close()
			for i := range lines {
				k := keyBytes{c2s: bytes.Repeat([]byte{byte(w)}, 32), s2c: bytes.Repeat([]byte{byte(i)}, 32)}
				nonce := binary.BigEndian.AppendUint64(bytes.Repeat([]byte{byte(w)}, 8), uint64(i))
				if err := writeKeyLog(f, nonce, k); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key log mode %#o, want 0600", fi.Mode().Perm())
	}
	got, err := ReadKeyLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != writers*lines {
		t.Fatalf("%d sessions, want %d", len(got), writers*lines)
	}
}

func TestOpenKeyLogRefusesReadableFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keylog")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil { // past the umask
		t.Fatal(err)
	}
	if f, err := OpenKeyLog(path); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "chmod 600") {
		if f != nil {
			f.Close()
		}
		t.Fatalf("OpenKeyLog of a 0644 file: %v", err)
	}
	if _, err := OpenKeyLog(filepath.Join(dir, "missing", "keylog")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("OpenKeyLog in a missing folder: %v", err)
	}
	if _, err := ReadKeyLogFile(filepath.Join(dir, "nothing")); err == nil || !strings.Contains(err.Error(), "nothing") {
		t.Fatalf("ReadKeyLogFile of a missing file: %v", err)
	}
}

func FuzzParseKeyLog(f *testing.F) {
	n16, k := strings.Repeat("ab", 16), strings.Repeat("01", 32)
	for _, s := range []string{
		"",
		keyLine(n16, k, k),
		"# comment\n" + keyLine(n16, k, k) + "\n" + keyLine(n16, k, k),
		keyLine(n16, k, k) + "\n" + keyLine(n16, k, strings.Repeat("02", 32)),
		KeyLogLabel + " zz",
		"\x00\xff\n\r",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseKeyLog(strings.NewReader(in), "fuzz")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz:") {
				t.Fatalf("error %q does not name the input", err)
			}
			return
		}
		// What parses writes back to the same sessions.
		var b bytes.Buffer
		for _, e := range got {
			if err := writeKeyLog(&b, e.ClientNonce, keyBytes{c2s: e.C2S, s2c: e.S2C}); err != nil {
				t.Fatal(err)
			}
		}
		again, err := ParseKeyLog(&b, "again")
		if err != nil || len(again) != len(got) {
			t.Fatalf("round trip: %d entries, %v; want %d", len(again), err, len(got))
		}
		for i := range got {
			if !bytes.Equal(again[i].ClientNonce, got[i].ClientNonce) || !bytes.Equal(again[i].C2S, got[i].C2S) || !bytes.Equal(again[i].S2C, got[i].S2C) {
				t.Fatalf("round trip changed entry %d", i)
			}
		}
	})
}
