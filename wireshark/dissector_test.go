package wireshark

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
)

// tsharkBin is tshark, or the test is skipped: CI machines get it from
// scripts/install-test-deps.sh.
func tsharkBin(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark is not installed (scripts/install-test-deps.sh installs it; Debian: apt-get install tshark): the Lua dissector is not tested")
	}
	return p
}

// Tshark runs tshark with the dissector on pcap, the key log preference
// set when keylog is not "", and fails the test on any Lua error. Its
// settings are a fresh folder's, so that a dissector a user installed in
// their plugins, or a key log set in their preferences, cannot interfere.
func Tshark(t testing.TB, pcap, keylog string, args ...string) (stdout, stderr string) {
	t.Helper()
	bin := tsharkBin(t)
	script, err := filepath.Abs("agentlab_tli.lua")
	if err != nil {
		t.Fatal(err)
	}
	all := []string{"-n", "-X", "lua_script:" + script, "-r", pcap}
	if keylog != "" {
		all = append(all, "-o", "agentlab_tli.keylog:"+keylog)
	}
	all = append(all, args...)
	cmd := exec.Command(bin, all...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "WIRESHARK_CONFIG_DIR="+home, "XDG_CONFIG_HOME="+home)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("tshark %s: %v\n%s", strings.Join(all, " "), err, errb.String())
	}
	for _, s := range []string{out.String(), errb.String()} {
		if i := strings.Index(s, "Lua Error"); i >= 0 {
			t.Fatalf("the dissector failed: %s", firstLine(s[i:]))
		}
		if i := strings.Index(s, "Lua: Error"); i >= 0 {
			t.Fatalf("the dissector does not load: %s", s[i:])
		}
	}
	return out.String(), errb.String()
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// infos is what the dissector calls each TLI frame, in capture order:
// the Info column of every TLI packet, one entry per frame.
func infos(t *testing.T, pcap, keylog string) []string {
	t.Helper()
	out, _ := Tshark(t, pcap, keylog, "-T", "fields", "-E", "separator=/t", "-e", "_ws.col.Protocol", "-e", "_ws.col.Info", "-e", "_ws.expert")
	var got []string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		proto, rest, _ := strings.Cut(line, "\t")
		if proto != "TLI" {
			continue
		}
		info, _, _ := strings.Cut(rest, "\t")
		got = append(got, strings.Split(info, " | ")...)
	}
	return got
}

const aggregator = "\x1f"

// fields returns every value of each field in the capture, in order.
func fields(t *testing.T, pcap, keylog string, names ...string) map[string][]string {
	t.Helper()
	args := []string{"-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=" + aggregator}
	for _, n := range names {
		args = append(args, "-e", n)
	}
	out, _ := Tshark(t, pcap, keylog, args...)
	got := map[string][]string{}
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		for i, v := range strings.Split(line, "\t") {
			if v != "" && i < len(names) {
				got[names[i]] = append(got[names[i]], strings.Split(v, aggregator)...)
			}
		}
	}
	return got
}

// cutting says how a capture cuts the frames into TCP segments.
type cutting struct {
	name  string
	merge bool // consecutive frames in one direction run together
	size  int  // bytes per segment at most
}

var cuttings = []cutting{
	{"a segment per frame", false, 60000},
	{"7-byte segments", false, 7},
	{"frames run together", true, 60000},
	{"frames run together in 30-byte segments", true, 30},
}

func segments(frames []wireFrame, c cutting) []segment {
	var runs []segment
	for _, f := range frames {
		if c.merge && len(runs) > 0 && runs[len(runs)-1].fromClient == f.fromClient {
			runs[len(runs)-1].data = append(runs[len(runs)-1].data, f.b...)
			continue
		}
		runs = append(runs, segment{f.fromClient, append([]byte(nil), f.b...)})
	}
	var out []segment
	for _, r := range runs {
		for b := r.data; len(b) > 0; {
			n := min(len(b), c.size)
			out = append(out, segment{r.fromClient, b[:n]})
			b = b[n:]
		}
	}
	return out
}

// capture writes the sessions, each on its own connection, as one pcap.
func capture(t *testing.T, name string, c cutting, sessions ...[]wireFrame) string {
	t.Helper()
	var conns []tcpConn
	for i, frames := range sessions {
		conns = append(conns, tcpConn{
			client: netip.MustParseAddrPort(fmt.Sprintf("127.100.0.11:%d", 40000+i)),
			server: netip.MustParseAddrPort("127.100.0.21:44443"),
			segs:   segments(frames, c),
		})
	}
	path := filepath.Join(t.TempDir(), name+".pcap")
	writePcap(t, path, conns)
	return path
}

func writeKeyLog(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keylog")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// encrypted is what a session shows without its keys: the clear
// handshake as it is, every sealed frame as encrypted.
func encrypted(want []string) []string {
	out := slices.Clone(want)
	for i, w := range out {
		for _, name := range []string{"ClientConfirm", "Request", "Response"} {
			if w == name || strings.HasPrefix(w, name+" ") {
				out[i] = name + " (encrypted)"
			}
		}
	}
	return out
}

func agentRequests() []*tlipb.Request {
	return []*tlipb.Request{
		request(&tlipb.GetHostConfigRequest{Name: "hco.smps1"}),
		request(&tlipb.GetHostConfigRequest{Name: "hco.missing"}),
		request(&tlipb.SetAgentInfoRequest{AgentName: trustedHost, Info: "Product=WebAgent,Platform=Linux", Pid: 4242, Role: "hla"}),
		request(&tlipb.GetAgentConfigRequest{Name: "aco.wa1"}),
		request(&tlipb.IsProtectedRequest{AgentName: "wa1", Resource: "/protected/", Action: "GET"}),
		request(&tlipb.IsProtectedRequest{AgentName: "wa1", Resource: "/", Action: "GET"}),
		request(&tlipb.LoginRequest{AgentName: "wa1", Realm: "realm.protected", User: "user1", Password: "wrong", ClientIp: "127.0.0.1"}),
		request(&tlipb.LoginRequest{AgentName: "wa1", Realm: "realm.protected", User: "user1", Password: "Passw0rd1", ClientIp: "127.0.0.1"}),
		request(&tlipb.AuthorizeRequest{AgentName: "wa1", SessionToken: "token-user1", Resource: "/protected/", Action: "GET", ClientIp: "127.0.0.1"}),
		// Over 5,000 bytes (in a field the Info column leaves out): many
		// AES blocks, and many segments when cut.
		request(&tlipb.SetAgentInfoRequest{AgentName: trustedHost, Info: strings.Repeat("Product=WebAgent,", 300), Pid: 4243, Role: "llawp"}),
		request(&tlipb.DoManagementRequest{AgentName: "wa1", Command: "GET_AGENT_COMMANDS"}),
		request(&tlipb.LogoutRequest{AgentName: "wa1", SessionToken: "token-user1"}),
	}
}

func adminRequests() []*tlipb.Request {
	return []*tlipb.Request{
		request(&tlipb.RegisterHostRequest{AdminUser: "siteminder", AdminPassword: "siteminder", TrustedHost: "trust_wa2", HostConfigObject: "hco.smps1", Overwrite: true, FipsMode: "COMPAT"}),
		request(&tlipb.QueueManagementRequest{AdminUser: "siteminder", AdminPassword: "siteminder", AgentName: "wa1", Command: &tlipb.ManagementCommand{Code: 194, Name: "FLUSH_ALL"}}),
	}
}

// labSessions records the sessions every dissector test reads: an agent's
// and an administrator's with the keys logged, an agent's the key log
// does not have, and refused handshakes.
func labSessions(t *testing.T) (frames [][]wireFrame, want, wantNoKeys []string, keylog string) {
	t.Helper()
	var kl lockedBuffer
	addr := policyServer(t, &kl)
	unlogged := policyServer(t, nil)

	add := func(fs []wireFrame, w, noKeys []string) {
		frames = append(frames, fs)
		want = append(want, w...)
		wantNoKeys = append(wantNoKeys, noKeys...)
	}
	agent := agentSession(t, addr, false, agentRequests()...)
	add(agent.frames, agent.want, encrypted(agent.want))
	admin := agentSession(t, addr, true, adminRequests()...)
	add(admin.frames, admin.want, encrypted(admin.want))
	other := agentSession(t, unlogged, false, agentRequests()[:2]...)
	add(other.frames, encrypted(other.want), encrypted(other.want))

	wrong := rawSession(t, addr, frame(t, tli.FrameClientHello, &tlipb.ClientHello{
		Version: tli.Version, TrustedHost: trustedHost, ClientNonce: bytes.Repeat([]byte{1}, 16), Proof: []byte("not the proof")}))
	w := []string{"ClientHello trusted host " + trustedHost, "HandshakeError 3154 Shared secret incorrect for this client"}
	add(wrong, w, w)
	v2 := rawSession(t, addr, frame(t, tli.FrameClientHello, &tlipb.ClientHello{
		Version: 2, TrustedHost: trustedHost, ClientNonce: bytes.Repeat([]byte{2}, 16)}))
	w = []string{"ClientHello trusted host " + trustedHost + " version 2", "HandshakeError 3153 Bad version"}
	add(v2, w, w)
	huge := binary.BigEndian.AppendUint32(nil, 2<<20)
	big := rawSession(t, addr, append(huge, tli.FrameClientHello))
	w = []string{"ClientHello, length 2097152 over 1 MiB", "HandshakeError 3152 No client hello"}
	add(big, w, w)
	return frames, want, wantNoKeys, writeKeyLog(t, kl.Bytes())
}

func diff(got, want []string) string {
	var b strings.Builder
	for i := range max(len(got), len(want)) {
		g, w := "(none)", "(none)"
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		mark := "  "
		if g != w {
			mark = "! "
		}
		fmt.Fprintf(&b, "%s%3d got  %s\n%s    want %s\n", mark, i, clip(g), mark, clip(w))
	}
	return b.String()
}

// TestDissectorNamesEveryFrame checks, however TCP cut the frames, that
// the dissector names every frame as the traces do (tli.Describe and
// tli.DescribeResponse): requests and responses decrypted with the key
// log, the clear handshake with or without it.
func TestDissectorNamesEveryFrame(t *testing.T) {
	tsharkBin(t)
	frames, want, wantNoKeys, keylog := labSessions(t)
	for _, c := range cuttings {
		t.Run(c.name, func(t *testing.T) {
			pcap := capture(t, "lab", c, frames...)
			if got := infos(t, pcap, keylog); !slices.Equal(got, want) {
				t.Errorf("with the key log:\n%s", diff(got, want))
			}
			if got := infos(t, pcap, ""); !slices.Equal(got, wantNoKeys) {
				t.Errorf("without the key log:\n%s", diff(got, wantNoKeys))
			}
		})
	}
}

// TestDissectorFields checks the fields a learner filters on, decoded
// from the protobuf of every kind of message.
func TestDissectorFields(t *testing.T) {
	tsharkBin(t)
	frames, _, _, keylog := labSessions(t)
	pcap := capture(t, "lab", cuttings[0], frames...)
	names := []string{
		"agentlab_tli.client_hello.trusted_host", "agentlab_tli.client_hello.mode", "agentlab_tli.server_hello.server_name",
		"agentlab_tli.handshake_error.code", "agentlab_tli.request_name", "agentlab_tli.decryption",
		"agentlab_tli.get_host_config_request.name", "agentlab_tli.host_config.name", "agentlab_tli.policy_server_addr.host",
		"agentlab_tli.host_config.max_sockets_per_port", "agentlab_tli.agent_config.agent_names", "agentlab_tli.extra_entry.value",
		"agentlab_tli.is_protected_request.resource", "agentlab_tli.is_protected_response.realm",
		"agentlab_tli.login_request.password", "agentlab_tli.login_response.expires_unix", "agentlab_tli.response.result",
		"agentlab_tli.response.message", "agentlab_tli.header.value", "agentlab_tli.management_command.code",
		"agentlab_tli.register_host_request.admin_password", "agentlab_tli.register_host_response.shared_secret",
		"agentlab_tli.set_agent_info_request.pid", "agentlab_tli.request.id", "agentlab_tli.host_config.enable_failover",
	}
	got := fields(t, pcap, keylog, names...)
	for _, tc := range []struct {
		field string
		want  []string // each must be among the field's values
	}{
		{"agentlab_tli.client_hello.trusted_host", []string{trustedHost}},
		// proto3 leaves zero values (MODE_AGENT, SUCCESS) off the wire.
		{"agentlab_tli.client_hello.mode", []string{"1"}},
		{"agentlab_tli.server_hello.server_name", []string{serverName}},
		{"agentlab_tli.handshake_error.code", []string{"3152", "3153", "3154"}},
		{"agentlab_tli.request_name", []string{"GetHostConfig", "GetAgentConfig", "SetAgentInfo", "IsProtected", "Login", "Authorize", "Logout", "DoManagement", "RegisterHost", "QueueManagement"}},
		{"agentlab_tli.decryption", []string{"decrypted, GCM tag verified", "client nonce "}},
		{"agentlab_tli.get_host_config_request.name", []string{"hco.smps1", "hco.missing"}},
		{"agentlab_tli.host_config.name", []string{"hco.smps1"}},
		{"agentlab_tli.policy_server_addr.host", []string{serverName, "smps2.shared.lab"}},
		{"agentlab_tli.host_config.max_sockets_per_port", []string{"20"}},
		{"agentlab_tli.host_config.enable_failover", []string{"1"}},
		{"agentlab_tli.agent_config.agent_names", []string{"wa1,127.0.0.11", "wa1b,127.0.0.12"}},
		{"agentlab_tli.extra_entry.value", []string{".shared.lab"}},
		{"agentlab_tli.is_protected_request.resource", []string{"/protected/", "/"}},
		{"agentlab_tli.is_protected_response.realm", []string{"realm.protected"}},
		{"agentlab_tli.login_request.password", []string{"wrong", "Passw0rd1"}},
		{"agentlab_tli.login_response.expires_unix", []string{"1795655947"}},
		{"agentlab_tli.response.result", []string{"-1", "1", "2"}},
		{"agentlab_tli.response.message", []string{"wrong password", "not protected", "no HCO hco.missing"}},
		{"agentlab_tli.header.value", []string{"user1"}},
		{"agentlab_tli.management_command.code", []string{"194", "196"}},
		{"agentlab_tli.register_host_request.admin_password", []string{"siteminder"}},
		{"agentlab_tli.register_host_response.shared_secret", []string{hex.EncodeToString([]byte("a new secret"))}},
		{"agentlab_tli.set_agent_info_request.pid", []string{"4242"}},
		{"agentlab_tli.request.id", []string{"1", "12"}},
	} {
		for _, w := range tc.want {
			if !slices.ContainsFunc(got[tc.field], func(v string) bool { return v == w || strings.HasSuffix(w, " ") && strings.HasPrefix(v, w) }) {
				t.Errorf("%s: no value %q among %q", tc.field, w, got[tc.field])
			}
		}
	}
	// Without the key log nothing sealed is read, and the handshake is.
	clear := fields(t, pcap, "", names...)
	for _, f := range []string{"agentlab_tli.request_name", "agentlab_tli.get_host_config_request.name", "agentlab_tli.login_request.password", "agentlab_tli.response.result"} {
		if len(clear[f]) > 0 {
			t.Errorf("without the key log, %s shows %q", f, clear[f])
		}
	}
	if !slices.Contains(clear["agentlab_tli.client_hello.trusted_host"], trustedHost) || !slices.Contains(clear["agentlab_tli.handshake_error.code"], "3154") {
		t.Errorf("without the key log the handshake is not decoded: %v", clear)
	}
}

// TestDissectorResyncs checks frames the capture lost or that were
// altered: a tampered request does not decrypt (its tag fails), a lost
// exchange moves the nonce counters on, and the frames after both still
// decrypt.
func TestDissectorResyncs(t *testing.T) {
	tsharkBin(t)
	var kl lockedBuffer
	addr := policyServer(t, &kl)
	reqs := agentRequests()[:6]
	s := agentSession(t, addr, false, reqs...)
	// Frames: 3 of handshake, then request/response pairs.
	req := func(i int) int { return 3 + 2*i }
	frames, want := slices.Clone(s.frames), slices.Clone(s.want)
	tampered := slices.Clone(frames[req(1)].b)
	tampered[tli.HeaderSize+2] ^= 0x40
	frames[req(1)] = wireFrame{true, tampered}
	want[req(1)] = "Request (does not decrypt)"
	// Its response still decrypts, and says which request id it answers.
	want[req(1)+1] = "Response unseen request 2: FAILURE - no HCO hco.missing"
	// The fourth exchange never reached the capture.
	frames = slices.Delete(frames, req(3), req(3)+2)
	want = slices.Delete(want, req(3), req(3)+2)
	pcap := capture(t, "resync", cuttings[0], frames)
	if got := infos(t, pcap, writeKeyLog(t, kl.Bytes())); !slices.Equal(got, want) {
		t.Errorf("\n%s", diff(got, want))
	}
}

// TestDissectorKeyLogProblems checks that a key log's bad line is
// reported with its file and line, and that its good lines still work.
func TestDissectorKeyLogProblems(t *testing.T) {
	tsharkBin(t)
	var kl lockedBuffer
	addr := policyServer(t, &kl)
	s := agentSession(t, addr, false, agentRequests()[:1]...)
	pcap := capture(t, "one", cuttings[0], s.frames)
	for _, tc := range []struct {
		name, prefix string
		err          string
	}{
		{"short key", "TLI_SESSION " + strings.Repeat("ab", 16) + " 0102 0304\n", ":1: client-to-server key is 2 bytes, want 32"},
		{"other label", "# comment\nCLIENT_RANDOM 00 11\n", ":2: want a line"},
		{"not hex", "TLI_SESSION " + strings.Repeat("zz", 16) + " " + strings.Repeat("00", 32) + " " + strings.Repeat("00", 32) + "\n", ":1: client nonce"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeKeyLog(t, append([]byte(tc.prefix), kl.Bytes()...))
			got := infos(t, pcap, path)
			if !slices.Equal(got, s.want) {
				t.Errorf("the good line no longer decrypts:\n%s", diff(got, s.want))
			}
			_, stderr := Tshark(t, pcap, path)
			if !strings.Contains(stderr, path+tc.err) {
				t.Errorf("stderr does not report %q:\n%s", path+tc.err, stderr)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "no-such-keylog")
		if got, want := infos(t, pcap, path), encrypted(s.want); !slices.Equal(got, want) {
			t.Errorf("\n%s", diff(got, want))
		}
		_, stderr := Tshark(t, pcap, path)
		if !strings.Contains(stderr, path) {
			t.Errorf("stderr does not name the missing key log %s:\n%s", path, stderr)
		}
	})
}

// sealedConn is a connection made here, not by tli, so that its sealed
// frames can carry any plaintext: the keys are random and the key log line
// is written by the documented format.
type sealedConn struct {
	nonce    []byte
	c2s, s2c cipher.AEAD
	counters map[bool]uint64
}

func newSealedConn(t testing.TB) (*sealedConn, string) {
	t.Helper()
	sc := &sealedConn{nonce: make([]byte, 16), counters: map[bool]uint64{}}
	rand.Read(sc.nonce)
	var line []string
	for _, d := range []*cipher.AEAD{&sc.c2s, &sc.s2c} {
		key := make([]byte, 32)
		rand.Read(key)
		block, err := aes.NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		if *d, err = cipher.NewGCM(block); err != nil {
			t.Fatal(err)
		}
		line = append(line, hex.EncodeToString(key))
	}
	return sc, fmt.Sprintf("%s %x %s %s\n", tli.KeyLogLabel, sc.nonce, line[0], line[1])
}

func (sc *sealedConn) seal(fromClient bool, typ byte, plain []byte) wireFrame {
	aead := sc.s2c
	if fromClient {
		aead = sc.c2s
	}
	nonce := make([]byte, 12)
	binary.BigEndian.PutUint64(nonce[4:], sc.counters[fromClient])
	sc.counters[fromClient]++
	sealed := aead.Seal(nil, nonce, plain, []byte{typ})
	f, _ := tli.AppendFrame(nil, typ, sealed)
	return wireFrame{fromClient, f}
}

// garbageSession carries plain as a request and as a response, sealed,
// then raw as clear bytes from the client.
func garbageSession(t testing.TB, plain, raw []byte) ([]wireFrame, string) {
	t.Helper()
	sc, line := newSealedConn(t)
	hello, _ := tli.AppendFrame(nil, tli.FrameClientHello, protowire.AppendBytes(protowire.AppendTag(
		protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1), 4, protowire.BytesType), sc.nonce))
	server, _ := tli.AppendFrame(nil, tli.FrameServerHello, nil)
	frames := []wireFrame{{true, hello}, {false, server}, sc.seal(true, tli.FrameClientConfirm, nil),
		sc.seal(true, tli.FrameRequest, plain), sc.seal(false, tli.FrameResponse, plain)}
	if len(raw) > 0 {
		frames = append(frames, wireFrame{true, raw})
	}
	return frames, line
}

// randomMessage is protobuf-shaped noise: valid keys with random field
// numbers and wire types, values cut short, nested messages of noise.
func randomMessage(r *mrand.Rand, depth int) []byte {
	var b []byte
	for range r.IntN(8) {
		num := protowire.Number(1 + r.IntN(40))
		switch r.IntN(7) {
		case 0:
			b = protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), r.Uint64())
		case 1:
			b = protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), strings.Repeat("x", r.IntN(40)))
		case 2:
			if depth < 4 {
				b = protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), randomMessage(r, depth+1))
			}
		case 3:
			b = protowire.AppendFixed32(protowire.AppendTag(b, num, protowire.Fixed32Type), r.Uint32())
		case 4:
			b = protowire.AppendFixed64(protowire.AppendTag(b, num, protowire.Fixed64Type), r.Uint64())
		case 5:
			b = protowire.AppendTag(b, num, protowire.Type(3+r.IntN(5))) // groups and invalid types
		case 6:
			b = append(b, byte(r.IntN(256)))
		}
	}
	if len(b) > 0 && r.IntN(4) == 0 {
		b = b[:r.IntN(len(b))]
	}
	return b
}

// TestDissectorSurvivesGarbage feeds the protobuf reader and the frame
// reader noise, sealed with logged keys so that it is decrypted and
// decoded: the dissector must decrypt every frame and never fail.
func TestDissectorSurvivesGarbage(t *testing.T) {
	tsharkBin(t)
	r := mrand.New(mrand.NewPCG(1, 2))
	var sessions [][]wireFrame
	var keylog []byte
	for i := range 200 {
		plain := randomMessage(r, 0)
		if i%10 == 0 {
			plain = make([]byte, r.IntN(64))
			for j := range plain {
				plain[j] = byte(r.IntN(256))
			}
		}
		var raw []byte
		if i%3 == 0 {
			raw = binary.BigEndian.AppendUint32(nil, uint32(r.IntN(64)))
			raw = append(raw, byte(r.IntN(9)))
			raw = append(raw, randomMessage(r, 0)...)
		}
		frames, line := garbageSession(t, plain, raw)
		sessions = append(sessions, frames)
		keylog = append(keylog, line...)
	}
	pcap := capture(t, "garbage", cuttings[0], sessions...)
	got := fields(t, pcap, writeKeyLog(t, keylog), "agentlab_tli.decryption")
	n := 0
	for _, v := range got["agentlab_tli.decryption"] {
		if v == "decrypted, GCM tag verified" {
			n++
		}
	}
	if want := 3 * len(sessions); n != want {
		t.Errorf("%d sealed frames decrypted, want %d", n, want)
	}
}

// FuzzDissector runs tshark on each input (about 0.3 s each): the sealed
// request and response carry plain, and raw follows in clear.
func FuzzDissector(f *testing.F) {
	f.Add([]byte{}, []byte{})
	f.Add([]byte("\x08\x01\x6a\x0b\x0a\x09hco.smps1"), []byte{0, 0, 0, 3, 4, 8, 0x80, 0x01})
	f.Add([]byte("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"), []byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Add([]byte("\x6a\x05\x0a\x10abc"), []byte{0, 0, 0, 0, 9})
	f.Add([]byte("\xf2\x01\x02\x0a\x00\x12\x00"), []byte{0, 0, 0, 2, 1, 0x22, 0x00}) // empty bytes and strings
	f.Fuzz(func(t *testing.T, plain, raw []byte) {
		tsharkBin(t)
		if len(plain) > 4096 || len(raw) > 4096 {
			return
		}
		frames, line := garbageSession(t, plain, raw)
		pcap := capture(t, "fuzz", cuttings[0], frames)
		got := fields(t, pcap, writeKeyLog(t, []byte(line)), "agentlab_tli.decryption")
		if n := strings.Count(strings.Join(got["agentlab_tli.decryption"], aggregator), "decrypted, GCM tag verified"); n != 3 {
			t.Errorf("%d sealed frames decrypted, want 3: %q", n, got["agentlab_tli.decryption"])
		}
	})
}
