// Command smreghost registers a trusted host with a Policy Server and writes
// SmHost.conf, with the vendor's flags:
//
//	smreghost -i <ps[:port]> -u <admin> -p <password> -hn <trusted host> -hc <HCO> [-f SmHost.conf] [-o] [-cf COMPAT|MIGRATE|ONLY] [-sh secret]
//
// and agentlab's own long flags (--hosts, --trace, --source, --timeout).
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/agentlab/agentlab/bootstrap"
	"github.com/agentlab/agentlab/cmdline"
	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/procname"
	"github.com/agentlab/agentlab/trace"
)

// smreghost is the command line. The vendor's flags keep the vendor's
// spellings (-i, -hn, ...): cmdline.Vendor translates them for kong, and the
// grammar names each flag as the vendor spells it, without the dash.
type smreghost struct {
	Server    string `name:"i" placeholder:"HOST[:PORT]" help:"Policy Server to register with (required)."`
	User      string `name:"u" placeholder:"ADMIN" help:"Policy Server administrator (required)."`
	Password  string `name:"p" placeholder:"PASSWORD" help:"Administrator password (required)."`
	HostName  string `name:"hn" placeholder:"TRUSTEDHOST" help:"Trusted host name to register (required)."`
	HCO       string `name:"hc" placeholder:"HCO" help:"Host configuration object (required)."`
	File      string `name:"f" default:"SmHost.conf" placeholder:"FILE" help:"SmHost.conf to write."`
	Overwrite bool   `name:"o" help:"Overwrite an existing trusted host and SmHost.conf."`
	FIPSMode  string `name:"cf" default:"${fips_mode}" placeholder:"COMPAT|MIGRATE|ONLY" help:"FIPS mode."`
	Secret    string `name:"sh" placeholder:"SECRET" help:"Shared secret to register (default: the server generates one)."`

	Hosts   string        `placeholder:"FILE" help:"The lab's hosts file, to resolve lab host names."`
	Trace   string        `placeholder:"DIR" help:"Folder for this process's socket trace."`
	Source  string        `placeholder:"IP" help:"Local IP address to connect from (the agent host's lab address)."`
	Timeout time.Duration `default:"30s" placeholder:"DURATION" help:"Give up after this long."`
}

func (c *smreghost) Validate() error {
	var missing []string
	for _, f := range []struct{ name, v string }{{"-i", c.Server}, {"-u", c.User}, {"-p", c.Password}, {"-hn", c.HostName}, {"-hc", c.HCO}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	switch conf.FIPSMode(strings.ToUpper(c.FIPSMode)) {
	case conf.FIPSCompat, conf.FIPSMigrate, conf.FIPSOnly:
	default:
		return fmt.Errorf("-cf %q: want COMPAT, MIGRATE or ONLY", c.FIPSMode)
	}
	return nil
}

var program = cmdline.Program{
	Name:    "smreghost",
	Summary: "registers a trusted host with a Policy Server and writes its SmHost.conf, with the vendor's flags",
	Vendor: &cmdline.Vendor{
		Flags: []string{"i", "u", "p", "hn", "hc", "f", "o", "cf", "sh"},
		Usage: "smreghost -i <ps[:port]> -u <admin> -p <password> -hn <trusted host> -hc <HCO> [-f SmHost.conf] [-o] [-cf COMPAT|MIGRATE|ONLY] [-sh secret] [--hosts FILE] [--trace DIR] [--source IP] [--timeout D]",
	},
	Options: []kong.Option{kong.Vars{"fips_mode": string(conf.DefaultFIPSMode)}},
}

func main() {
	var c smreghost
	program.Main(&c, os.Args[1:])
	program.Exit(c.run())
}

func (c *smreghost) run() error {
	if err := procname.Set("smreghost"); err != nil {
		return err
	}
	hostID, err := conf.HostIdentity()
	if err != nil {
		return err
	}
	rec, err := trace.Open(c.Trace, c.Hosts, c.Source, trace.Options{Proc: "smreghost", Role: "smreghost"})
	if err != nil {
		return err
	}
	defer rec.Close()
	dialer, err := trace.LocalDialer(c.Source)
	if err != nil {
		return fmt.Errorf("--source: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	var secret []byte
	if c.Secret != "" {
		secret = []byte(c.Secret)
	}
	sm, err := bootstrap.Register(ctx, bootstrap.Registration{
		Server: c.Server, AdminUser: c.User, AdminPassword: c.Password, TrustedHost: c.HostName, HCO: c.HCO,
		File: c.File, Overwrite: c.Overwrite, FIPSMode: conf.FIPSMode(strings.ToUpper(c.FIPSMode)), Secret: secret, HostID: hostID,
		Recorder: rec, Dialer: dialer,
	})
	if err != nil {
		return err
	}
	fmt.Printf("Host Registration Successful\n")
	fmt.Printf("Trusted host %s registered with host configuration object %s at %s\n", sm.HostName, sm.HostConfigObject, sm.PolicyServers[0].Addr())
	fmt.Printf("%s file successfully written\n", c.File)
	return nil
}
