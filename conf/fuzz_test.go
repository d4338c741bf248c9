package conf

import (
	"reflect"
	"strings"
	"testing"
)

// seeds are realistic files and the broken forms the parser must reject.
var seeds = []string{
	vendorSmHost,
	strings.ReplaceAll(vendorSmHost, "\r\n", "\n"),
	vendorWebAgent,
	strings.ReplaceAll(vendorWebAgent, "\n", "\r\n"),
	minimalSmHost,
	minimalWebAgent,
	"\xef\xbb\xbf" + minimalSmHost,
	"",
	"\n",
	"# <EOF>",
	"a=b # c\r\nb = \"x # y\"   # z\r\n# <EOF>\r\n",
	"a= #c\na=#c\na=\"\"#c\n",
	"hostname=\"trust_wa1\nsharedsecret=\"x\"\n",
	"hostname=\"a\" b\n",
	"just words\n",
	"=\"v\"\n",
	"host name=\"v\"\n",
	"a=\"\x00\"\n",
	"a=\"\xff\"\n",
	"a=\"1\"\rb=\"2\"\n",
	"a=\"1\"\r",
	"policyserver=\"h,0,0,0\"\n",
	"requesttimeout=\"0\"\nfipsmode=\"x\"\nenabledynamichco=\"maybe\"\n",
	minimalSmHost + "policyserver=\"h,1,2\"\nsharedsecrettime=\"-1\"\n",
	minimalWebAgent + "AgentWaitTime=\"abc\"\nEnableWebAgent=\"1\"\n",
	"sharedsecret=\"{AL1}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"\n",
}

func addSeeds(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
}

func FuzzParse(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		cf, err := Parse("x.conf", data)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T, want *Error", err)
			}
			return
		}
		if got := cf.Bytes(); string(got) != string(data) {
			t.Fatalf("rewrite differs:\n got %q\nwant %q", got, data)
		}
		entries := cf.Entries()
		// Set on every entry of a large input would make the test, not
		// the parser, quadratic.
		entries = entries[:min(len(entries), 64)]
		// Every value read can be written back and read again.
		for _, e := range entries {
			if err := cf.Set(e.Key, e.Value+"x"); err != nil {
				t.Fatalf("Set(%q, %q): %v", e.Key, e.Value+"x", err)
			}
		}
		if err := cf.Add("fuzz.added", "v # w"); err != nil {
			t.Fatal(err)
		}
		again, err := Parse("x.conf", cf.Bytes())
		if err != nil {
			t.Fatalf("edited file does not parse: %v\n%q", err, cf.Bytes())
		}
		if !reflect.DeepEqual(again.Entries(), cf.Entries()) {
			t.Fatalf("entries after edit:\n got %+v\nwant %+v", again.Entries(), cf.Entries())
		}
		for _, e := range entries {
			if strings.EqualFold(e.Key, "fuzz.added") {
				continue
			}
			// Set folds keys that differ only in case into one line, so the
			// last Set among them wins.
			want := ""
			for _, o := range entries {
				if strings.EqualFold(o.Key, e.Key) {
					want = o.Value + "x"
				}
			}
			if v, _, ok := again.Get(e.Key); !ok || v != want {
				t.Fatalf("Get(%q) = %q, %v after Set; want %q", e.Key, v, ok, want)
			}
		}
		if v, _, ok := again.Get("FUZZ.ADDED"); !ok || v != "v # w" {
			t.Fatalf("added key: %q, %v", v, ok)
		}
	})
}

func FuzzParseSmHost(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseSmHost("SmHost.conf", data)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T, want *Error", err)
			}
			return
		}
		again, err := ParseSmHost("SmHost.conf", h.File.Bytes())
		if err != nil {
			t.Fatalf("rewrite does not parse: %v", err)
		}
		if !reflect.DeepEqual(again.File.Entries(), h.File.Entries()) {
			t.Fatalf("entries differ after rewrite")
		}
		a, b := *h, *again
		a.File, b.File = nil, nil
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("rewrite reads differently:\n got %+v\nwant %+v", b, a)
		}
		// The secret never panics, whatever the value.
		_, _ = h.Secret("fuzz-host")
		// What was read can be laid out afresh and read the same.
		n, err := NewSmHost("SmHost.conf", a)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("NewSmHost error %T, want *Error", err)
			}
			return
		}
		c := *n
		c.File, c.Lines = nil, SmHostLines{}
		a.Lines = SmHostLines{}
		if !reflect.DeepEqual(a, c) {
			t.Fatalf("NewSmHost reads differently:\n got %+v\nwant %+v", c, a)
		}
	})
}

func FuzzParseWebAgent(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := ParseWebAgent("/lab/WebAgent.conf", data)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T, want *Error", err)
			}
			return
		}
		again, err := ParseWebAgent("/lab/WebAgent.conf", w.File.Bytes())
		if err != nil {
			t.Fatalf("rewrite does not parse: %v", err)
		}
		a, b := *w, *again
		a.File, b.File = nil, nil
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("rewrite reads differently:\n got %+v\nwant %+v", b, a)
		}
	})
}
