package tli

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
)

// Labels bind each derived value to its use, so that no proof can be
// replayed as another.
const (
	labelClientProof = "agentlab tli v1 client hello"
	labelServerProof = "agentlab tli v1 server hello"
	labelConfirm     = "agentlab tli v1 client confirm"
	labelC2S         = "agentlab tli v1 client to server"
	labelS2C         = "agentlab tli v1 server to client"
)

func mac(key []byte, label string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	for _, p := range parts {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(p)))
		m.Write(l[:])
		m.Write(p)
	}
	return m.Sum(nil)
}

// direction seals or opens the frames of one direction: AES-256-GCM with a
// counter nonce, never sent, so a dropped, replayed or reordered frame fails
// to open.
type direction struct {
	aead    cipher.AEAD
	counter uint64
	nonce   [12]byte
}

var errBadFrame = errors.New("frame failed authentication")

func newDirection(key []byte) (*direction, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &direction{aead: aead}, nil
}

func (d *direction) next() []byte {
	binary.BigEndian.PutUint64(d.nonce[4:], d.counter)
	d.counter++
	return d.nonce[:]
}

// sealFrame appends a whole sealed frame (header included) to dst.
func (d *direction) sealFrame(dst []byte, typ byte, plain []byte) ([]byte, error) {
	n := len(plain) + d.aead.Overhead()
	if n > MaxFrame {
		return dst, &FrameError{Len: n, Err: ErrFrameTooLarge}
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = append(dst, typ)
	return d.aead.Seal(dst, d.next(), plain, []byte{typ}), nil
}

// open decrypts in place.
func (d *direction) open(typ byte, sealed []byte) ([]byte, error) {
	p, err := d.aead.Open(sealed[:0], d.next(), sealed, []byte{typ})
	if err != nil {
		return nil, errBadFrame
	}
	return p, nil
}

type sessionKeys struct {
	c2s, s2c *direction
}

// keyBytes are a session's raw AES keys, kept only until the directions
// are built and, when asked for, the key log line is written.
type keyBytes struct {
	c2s, s2c []byte
}

// deriveKeyBytes extracts once and expands one key per direction: both
// keys come from the same secret and nonces, so one extract serves both.
func deriveKeyBytes(ikm, clientNonce, serverNonce []byte) (keyBytes, error) {
	salt := append(append([]byte(nil), clientNonce...), serverNonce...)
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return keyBytes{}, err
	}
	c2s, err := hkdf.Expand(sha256.New, prk, labelC2S, 32)
	if err != nil {
		return keyBytes{}, err
	}
	s2c, err := hkdf.Expand(sha256.New, prk, labelS2C, 32)
	if err != nil {
		return keyBytes{}, err
	}
	return keyBytes{c2s: c2s, s2c: s2c}, nil
}

func (k keyBytes) session() (sessionKeys, error) {
	c2s, err := newDirection(k.c2s)
	if err != nil {
		return sessionKeys{}, err
	}
	s2c, err := newDirection(k.s2c)
	if err != nil {
		return sessionKeys{}, err
	}
	return sessionKeys{c2s: c2s, s2c: s2c}, nil
}

func deriveKeys(ikm, clientNonce, serverNonce []byte) (sessionKeys, error) {
	k, err := deriveKeyBytes(ikm, clientNonce, serverNonce)
	if err != nil {
		return sessionKeys{}, err
	}
	return k.session()
}
