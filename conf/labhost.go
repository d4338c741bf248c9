package conf

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// LabHostFile is the file a lab writes next to the SmHost.conf it
// registered, naming the lab host the folder's files belong to
// (wa1.shared.lab). A lab plays several hosts on one machine: its agent
// processes run as that host (HostIDEnv), so smreghost sealed the shared
// secret to that name and not to this machine. With this file, the
// folder's WebAgent.conf and SmHost.conf check and probe as they are,
// without the variable.
//
// It is the file format of WebAgent.conf, with one key:
//
//	host="wa1.shared.lab"
const LabHostFile = "LabHost.conf"

// Identity is the host identity that opens an SmHost.conf's shared secret,
// and where it came from, for a report to say.
type Identity struct {
	ID string
	// From is HostIDEnv, the LabHostFile path, or "" for this machine's
	// own identity (HostIdentity).
	From string
}

// WriteLabHost writes LabHostFile in dir, naming host.
func WriteLabHost(dir, host string) error {
	path := filepath.Join(dir, LabHostFile)
	var b builder
	b.comment("# LabHost.conf - written by agentlab run")
	b.comment("#")
	b.comment("# The lab host these files belong to: smreghost sealed SmHost.conf's")
	b.comment("# shared secret to this name, as the lab's web server host. agentlab conf")
	b.comment("# check and probe read it; " + HostIDEnv + " overrides it.")
	b.comment("#")
	b.entry("host", host)
	b.comment(eofMarker)
	data, err := b.bytes(path)
	if err != nil {
		return err
	}
	return writeAtomic(path, data, 0o644)
}

// ReadLabHost reads LabHostFile in dir; ok is false when there is none.
func ReadLabHost(dir string) (host string, ok bool, err error) {
	path := filepath.Join(dir, LabHostFile)
	f, err := ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	r := &fields{f: f}
	var line int
	r.str("host", &host, &line, true, "it names the lab host that registered this folder's SmHost.conf")
	if err := r.err(); err != nil {
		return "", false, err
	}
	return strings.TrimSpace(host), true, nil
}

// IdentityFor is the identity that opens the SmHost.conf at smHostPath:
// HostIDEnv when set (a user playing a host says so), else the lab host
// its folder's LabHostFile names, else this machine's (HostIdentity).
func IdentityFor(smHostPath string) (Identity, error) {
	if id := os.Getenv(HostIDEnv); id != "" {
		return Identity{ID: id, From: HostIDEnv}, nil
	}
	dir := filepath.Dir(smHostPath)
	if host, ok, err := ReadLabHost(dir); err != nil {
		return Identity{}, err
	} else if ok {
		return Identity{ID: host, From: filepath.Join(dir, LabHostFile)}, nil
	}
	id, err := HostIdentity()
	return Identity{ID: id}, err
}
