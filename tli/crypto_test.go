package tli

import (
	"bytes"
	"errors"
	"testing"
)

func testKeys(t *testing.T) (client, server sessionKeys) {
	t.Helper()
	secret, cn, sn := []byte("shared secret"), bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 16)
	client, err := deriveKeys(secret, cn, sn)
	if err != nil {
		t.Fatal(err)
	}
	server, err = deriveKeys(secret, cn, sn)
	if err != nil {
		t.Fatal(err)
	}
	return client, server
}

// seal returns the sealed payload of a frame (no header), as ReadFrame
// hands it to open.
func seal(t *testing.T, d *direction, typ byte, plain string) []byte {
	t.Helper()
	f, err := d.sealFrame(nil, typ, []byte(plain))
	if err != nil {
		t.Fatal(err)
	}
	typ2, payload, err := ReadFrame(bytes.NewReader(f), nil)
	if err != nil || typ2 != typ {
		t.Fatalf("sealed frame does not read back: %v", err)
	}
	return payload
}

func open(d *direction, typ byte, sealed []byte) (string, error) {
	p, err := d.open(typ, append([]byte(nil), sealed...))
	return string(p), err
}

func TestSealOpen(t *testing.T) {
	c, s := testKeys(t)
	for i, msg := range []string{"", "one", "two", string(make([]byte, 5000))} {
		got, err := open(s.c2s, FrameRequest, seal(t, c.c2s, FrameRequest, msg))
		if err != nil || got != msg {
			t.Fatalf("message %d: %q, %v", i, got, err)
		}
		got, err = open(c.s2c, FrameResponse, seal(t, s.s2c, FrameResponse, msg))
		if err != nil || got != msg {
			t.Fatalf("reply %d: %q, %v", i, got, err)
		}
	}
}

func TestSealedFrameReplay(t *testing.T) {
	c, s := testKeys(t)
	first := seal(t, c.c2s, FrameRequest, "IsProtected GET /")
	if _, err := open(s.c2s, FrameRequest, first); err != nil {
		t.Fatal(err)
	}
	if _, err := open(s.c2s, FrameRequest, first); !errors.Is(err, errBadFrame) {
		t.Fatalf("replayed frame: %v, want errBadFrame", err)
	}
}

func TestSealedFrameReorder(t *testing.T) {
	c, s := testKeys(t)
	one := seal(t, c.c2s, FrameRequest, "one")
	two := seal(t, c.c2s, FrameRequest, "two")
	if _, err := open(s.c2s, FrameRequest, two); !errors.Is(err, errBadFrame) {
		t.Fatalf("second frame first: %v", err)
	}
	if _, err := open(s.c2s, FrameRequest, one); !errors.Is(err, errBadFrame) {
		t.Fatalf("first frame second: %v", err)
	}
}

func TestSealedFrameDropped(t *testing.T) {
	c, s := testKeys(t)
	seal(t, c.c2s, FrameRequest, "lost on the way")
	if _, err := open(s.c2s, FrameRequest, seal(t, c.c2s, FrameRequest, "next")); !errors.Is(err, errBadFrame) {
		t.Fatalf("frame after a dropped one: %v", err)
	}
}

func TestSealedFrameTampered(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c, s sessionKeys, sealed []byte) (d *direction, typ byte, b []byte)
	}{
		{"flipped bit", func(c, s sessionKeys, b []byte) (*direction, byte, []byte) { b[0] ^= 1; return s.c2s, FrameRequest, b }},
		{"truncated", func(c, s sessionKeys, b []byte) (*direction, byte, []byte) { return s.c2s, FrameRequest, b[:len(b)-1] }},
		{"shorter than a tag", func(c, s sessionKeys, b []byte) (*direction, byte, []byte) { return s.c2s, FrameRequest, b[:3] }},
		{"empty", func(c, s sessionKeys, b []byte) (*direction, byte, []byte) { return s.c2s, FrameRequest, nil }},
		{"other frame type", func(c, s sessionKeys, b []byte) (*direction, byte, []byte) { return s.c2s, FrameResponse, b }},
		{"reflected to its sender", func(c, s sessionKeys, b []byte) (*direction, byte, []byte) { return c.s2c, FrameRequest, b }},
		{"other direction's key", func(c, s sessionKeys, b []byte) (*direction, byte, []byte) { return s.s2c, FrameRequest, b }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, s := testKeys(t)
			d, typ, b := tc.mutate(c, s, seal(t, c.c2s, FrameRequest, "Authorize GET /protected/"))
			if _, err := open(d, typ, b); !errors.Is(err, errBadFrame) {
				t.Fatalf("%v, want errBadFrame", err)
			}
		})
	}
}

func TestKeysDependOnEverything(t *testing.T) {
	base := func() ([]byte, []byte, []byte) {
		return []byte("secret"), bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 16)
	}
	secret, cn, sn := base()
	ref, _ := deriveKeys(secret, cn, sn)
	sealed := seal(t, ref.c2s, FrameRequest, "x")
	for name, change := range map[string]func(s, c, n []byte){
		"secret":       func(s, c, n []byte) { s[0]++ },
		"client nonce": func(s, c, n []byte) { c[0]++ },
		"server nonce": func(s, c, n []byte) { n[15]++ },
	} {
		s, c, n := base()
		change(s, c, n)
		k, err := deriveKeys(s, c, n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := open(k.c2s, FrameRequest, sealed); err == nil {
			t.Errorf("a different %s opens the frame", name)
		}
	}
}

func TestSealFrameTooLarge(t *testing.T) {
	c, _ := testKeys(t)
	max := MaxFrame - c.c2s.aead.Overhead()
	f, err := c.c2s.sealFrame(nil, FrameRequest, make([]byte, max))
	if err != nil || len(f) != HeaderSize+MaxFrame {
		t.Fatalf("largest plaintext: %d bytes, %v", len(f), err)
	}
	if _, err := c.c2s.sealFrame(nil, FrameRequest, make([]byte, max+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("one byte more: %v", err)
	}
}
