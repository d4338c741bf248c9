// Command smreghost registers a trusted host with a Policy Server and writes
// SmHost.conf, with the vendor's flags:
//
//	smreghost -i <ps[:port]> -u <admin> -p <password> -hn <trusted host> -hc <HCO> [-f SmHost.conf] [-o] [-cf COMPAT|MIGRATE|ONLY] [-sh secret]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/agentlab/agentlab/bootstrap"
	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/trace"
)

func main() {
	if err := mainErr(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "smreghost:", err)
		os.Exit(1)
	}
}

func mainErr(args []string) error {
	fs := flag.NewFlagSet("smreghost", flag.ContinueOnError)
	server := fs.String("i", "", "Policy Server to register with: host or host:port (required)")
	user := fs.String("u", "", "Policy Server administrator (required)")
	pass := fs.String("p", "", "administrator password (required)")
	hn := fs.String("hn", "", "trusted host name to register (required)")
	hc := fs.String("hc", "", "host configuration object (required)")
	file := fs.String("f", "SmHost.conf", "SmHost.conf to write")
	overwrite := fs.Bool("o", false, "overwrite an existing trusted host and SmHost.conf")
	cf := fs.String("cf", string(conf.DefaultFIPSMode), "FIPS mode: COMPAT, MIGRATE or ONLY")
	sh := fs.String("sh", "", "shared secret to register (default: the server generates one)")
	hostsFile := fs.String("hosts", "", "the lab's hosts file, to resolve lab host names")
	traceDir := fs.String("trace", "", "folder for this process's socket trace")
	source := fs.String("source", "", "local IP address to connect from (the agent host's lab address)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"-i", *server}, {"-u", *user}, {"-p", *pass}, {"-hn", *hn}, {"-hc", *hc}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		fs.Usage()
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	mode := conf.FIPSMode(strings.ToUpper(*cf))
	switch mode {
	case conf.FIPSCompat, conf.FIPSMigrate, conf.FIPSOnly:
	default:
		return fmt.Errorf("-cf %q: want COMPAT, MIGRATE or ONLY", *cf)
	}
	hostID, err := conf.HostIdentity()
	if err != nil {
		return err
	}
	rec, err := trace.Open(*traceDir, *hostsFile, *source, trace.Options{Proc: "smreghost", Role: "smreghost"})
	if err != nil {
		return err
	}
	defer rec.Close()
	dialer, err := trace.LocalDialer(*source)
	if err != nil {
		return fmt.Errorf("-source: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var secret []byte
	if *sh != "" {
		secret = []byte(*sh)
	}
	sm, err := bootstrap.Register(ctx, bootstrap.Registration{
		Server: *server, AdminUser: *user, AdminPassword: *pass, TrustedHost: *hn, HCO: *hc,
		File: *file, Overwrite: *overwrite, FIPSMode: mode, Secret: secret, HostID: hostID,
		Recorder: rec, Dialer: dialer,
	})
	if err != nil {
		return err
	}
	fmt.Printf("Host Registration Successful\n")
	fmt.Printf("Trusted host %s registered with host configuration object %s at %s\n", sm.HostName, sm.HostConfigObject, sm.PolicyServers[0].Addr())
	fmt.Printf("%s file successfully written\n", *file)
	return nil
}
