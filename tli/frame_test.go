package tli

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

func header(n uint32, typ byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, n), typ)
}

func TestFrameRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		typ  byte
		size int
	}{
		{"empty", FrameRequest, 0},
		{"one byte", FrameClientHello, 1},
		{"small", FrameResponse, 100},
		{"over the bufio size", FrameServerHello, 70000},
		{"exactly 1 MiB", FrameResponse, MaxFrame},
		{"unknown type", 200, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			payload := make([]byte, tc.size)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			var w bytes.Buffer
			if err := WriteFrame(&w, tc.typ, payload); err != nil {
				t.Fatal(err)
			}
			if w.Len() != HeaderSize+tc.size {
				t.Fatalf("frame is %d bytes, want %d", w.Len(), HeaderSize+tc.size)
			}
			appended, err := AppendFrame([]byte("prefix"), tc.typ, payload)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(appended[len("prefix"):], w.Bytes()) || string(appended[:6]) != "prefix" {
				t.Fatal("AppendFrame and WriteFrame disagree")
			}
			for _, r := range map[string]io.Reader{
				"whole":    bytes.NewReader(w.Bytes()),
				"one byte": iotest.OneByteReader(bytes.NewReader(w.Bytes())),
				"half":     iotest.HalfReader(bytes.NewReader(w.Bytes())),
			} {
				for _, buf := range [][]byte{nil, make([]byte, 10), make([]byte, 0, MaxFrame)} {
					typ, got, err := ReadFrame(r, buf)
					if err != nil {
						t.Fatal(err)
					}
					if typ != tc.typ || !bytes.Equal(got, payload) {
						t.Fatalf("read type %d, %d bytes; want %d, %d", typ, len(got), tc.typ, tc.size)
					}
					r = bytes.NewReader(w.Bytes())
				}
			}
		})
	}
}

func TestFrameStream(t *testing.T) {
	var w bytes.Buffer
	for i := range 5 {
		WriteFrame(&w, byte(i+1), bytes.Repeat([]byte{byte(i)}, i*10))
	}
	var buf []byte
	for i := range 5 {
		typ, p, err := ReadFrame(&w, buf)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if typ != byte(i+1) || len(p) != i*10 || (len(p) > 0 && p[0] != byte(i)) {
			t.Fatalf("frame %d: type %d len %d", i, typ, len(p))
		}
		buf = p
	}
	// A stream that ends between frames ends cleanly.
	if _, _, err := ReadFrame(&w, buf); err != io.EOF {
		t.Fatalf("after the last frame: %v, want exactly io.EOF", err)
	}
}

func TestFrameTooLarge(t *testing.T) {
	for _, n := range []uint32{MaxFrame + 1, 1 << 31, 0xffffffff} {
		// Only the header is there: a reader that tried to fill the
		// announced payload would report EOF instead.
		_, _, err := ReadFrame(bytes.NewReader(header(n, FrameClientHello)), nil)
		if !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("length %d: %v, want ErrFrameTooLarge", n, err)
		}
		var fe *FrameError
		if !errors.As(err, &fe) || fe.Len != int(n) || !strings.Contains(err.Error(), "1 MiB") {
			t.Errorf("length %d: %#v", n, err)
		}
	}

	big := make([]byte, MaxFrame+1)
	if _, err := AppendFrame(nil, FrameRequest, big); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("AppendFrame: %v", err)
	}
	var w bytes.Buffer
	if err := WriteFrame(&w, FrameRequest, big); !errors.Is(err, ErrFrameTooLarge) || w.Len() != 0 {
		t.Errorf("WriteFrame: %v, %d bytes written", err, w.Len())
	}
}

// allocated is how many bytes f allocates, on average over runs.
func allocated(runs int, f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

func TestFrameTooLargeDoesNotAllocate(t *testing.T) {
	hdr := header(MaxFrame+1, FrameClientHello)
	var r bytes.Reader
	n := allocated(50, func() {
		r.Reset(hdr)
		ReadFrame(&r, nil)
	})
	if n > 1024 {
		t.Errorf("rejecting a too-large frame allocates %d bytes", n)
	}
}

func TestAnnouncedLengthIsNotAllocatedUpFront(t *testing.T) {
	// A peer that announces 1 MiB and sends 10 bytes.
	data := append(header(MaxFrame, FrameClientHello), make([]byte, 10)...)
	var r bytes.Reader
	n := allocated(20, func() {
		r.Reset(data)
		ReadFrame(&r, nil)
	})
	if n > 64<<10 {
		t.Errorf("a truncated 1 MiB frame allocates %d bytes", n)
	}
}

func TestFrameTruncated(t *testing.T) {
	full, _ := AppendFrame(nil, FrameRequest, []byte("0123456789"))
	for cut := 1; cut < len(full); cut++ {
		_, _, err := ReadFrame(bytes.NewReader(full[:cut]), nil)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d: %v, want io.ErrUnexpectedEOF", cut, err)
		}
		if err == io.EOF || errors.Is(err, io.EOF) {
			t.Errorf("cut at %d: a truncated frame looks like a clean end", cut)
		}
	}
	// A big frame cut short, read with a buffer too small for it.
	big, _ := AppendFrame(nil, FrameRequest, make([]byte, 100000))
	_, _, err := ReadFrame(iotest.HalfReader(bytes.NewReader(big[:50000])), make([]byte, 5))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("big frame cut short: %v", err)
	}
}

func TestFrameReadError(t *testing.T) {
	full, _ := AppendFrame(nil, FrameRequest, make([]byte, 10000))
	for _, cut := range []int{0, 3, HeaderSize, 6000} {
		r := io.MultiReader(bytes.NewReader(full[:cut]), iotest.ErrReader(os.ErrDeadlineExceeded))
		_, _, err := ReadFrame(r, nil)
		if !errors.Is(err, os.ErrDeadlineExceeded) || !IsTimeout(err) {
			t.Errorf("cut at %d: %v, want the reader's error", cut, err)
		}
		var fe *FrameError
		if !errors.As(err, &fe) || !strings.HasPrefix(err.Error(), "reading frame: ") {
			t.Errorf("cut at %d: %v is not a FrameError", cut, err)
		}
	}
}

func TestFrameTypeName(t *testing.T) {
	for typ, want := range map[byte]string{
		FrameClientHello: "ClientHello", FrameServerHello: "ServerHello", FrameClientConfirm: "ClientConfirm",
		FrameHandshakeError: "HandshakeError", FrameRequest: "Request", FrameResponse: "Response", 0: "unknown(0)", 77: "unknown(77)",
	} {
		if got := frameTypeName(typ); got != want {
			t.Errorf("frameTypeName(%d) = %q, want %q", typ, got, want)
		}
	}
}

func FuzzReadFrame(f *testing.F) {
	for _, seed := range [][]byte{
		mustFrame(FrameClientHello, []byte("hello")),
		mustFrame(FrameRequest, nil),
		append(mustFrame(FrameRequest, []byte("a")), mustFrame(FrameResponse, []byte("b"))...),
		header(MaxFrame, FrameResponse),
		header(MaxFrame+1, FrameResponse),
		header(0xffffffff, 0xff),
		mustFrame(FrameServerHello, []byte("truncated"))[:8],
		{0, 0},
		{},
		[]byte("GET / HTTP/1.1\r\n\r\n"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, buf := range [][]byte{nil, make([]byte, 3, 16)} {
			r := bytes.NewReader(data)
			typ, payload, err := ReadFrame(r, buf)
			if err != nil {
				switch {
				case len(data) == 0:
					if err != io.EOF {
						t.Fatalf("empty input: %v", err)
					}
				case len(data) < HeaderSize:
					if !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Fatalf("short header: %v", err)
					}
				case binary.BigEndian.Uint32(data) > MaxFrame:
					if !errors.Is(err, ErrFrameTooLarge) {
						t.Fatalf("too large: %v", err)
					}
				default:
					if !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Fatalf("truncated: %v", err)
					}
				}
				continue
			}
			consumed := data[:len(data)-r.Len()]
			again, err := AppendFrame(nil, typ, payload)
			if err != nil {
				t.Fatalf("a frame that decoded does not encode: %v", err)
			}
			if !bytes.Equal(again, consumed) {
				t.Fatalf("re-encoded %x, read %x", again, consumed)
			}
		}
	})
}

func mustFrame(typ byte, payload []byte) []byte {
	b, err := AppendFrame(nil, typ, payload)
	if err != nil {
		panic(err)
	}
	return b
}
