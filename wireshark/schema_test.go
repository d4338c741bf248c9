package wireshark

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/agentlab/agentlab/proto/tlipb"
)

// luaSchema is what agentlab_tli.lua's ENUMS and MESSAGES tables say,
// read back from their one-entry-per-line layout.
type luaSchema struct {
	enums    map[string]map[int32]string
	messages map[string]map[int32]luaField
}

type luaField struct {
	name, typ string
	repeated  bool
	line      int
}

var (
	luaTable   = regexp.MustCompile(`^local (ENUMS|MESSAGES) = \{$`)
	luaEntry   = regexp.MustCompile(`^  (\w+) = \{$`)
	luaField1  = regexp.MustCompile(`^    \{ (\d+), "(\w+)", "(\w+)"(, repeated = true)? \},$`)
	luaEnumVal = regexp.MustCompile(`\[(-?\d+)\] = "(\w+)"`)
)

func readLuaSchema(t *testing.T, path string) luaSchema {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := luaSchema{enums: map[string]map[int32]string{}, messages: map[string]map[int32]luaField{}}
	var table, entry string
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		if m := luaTable.FindStringSubmatch(line); m != nil {
			table, entry = m[1], ""
			continue
		}
		if table == "" {
			continue
		}
		if line == "}" {
			table = ""
			continue
		}
		if m := luaEntry.FindStringSubmatch(line); m != nil {
			entry = m[1]
			if table == "ENUMS" {
				s.enums[entry] = map[int32]string{}
			} else {
				s.messages[entry] = map[int32]luaField{}
			}
			continue
		}
		switch {
		case strings.TrimSpace(line) == "},":
			entry = ""
		case table == "ENUMS" && entry != "":
			for _, m := range luaEnumVal.FindAllStringSubmatch(line, -1) {
				v, _ := strconv.Atoi(m[1])
				s.enums[entry][int32(v)] = m[2]
			}
		case table == "MESSAGES" && entry != "":
			m := luaField1.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("%s:%d: not a field line of the form { N, \"name\", \"type\" }: %q", path, n, line)
			}
			num, _ := strconv.Atoi(m[1])
			s.messages[entry][int32(num)] = luaField{name: m[2], typ: m[3], repeated: m[4] != "", line: n}
		default:
			t.Fatalf("%s:%d: unexpected line in %s: %q", path, n, table, line)
		}
	}
	return s
}

// luaType is how the Lua table names a descriptor field's type.
func luaType(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.MessageKind:
		return string(fd.Message().Name())
	case protoreflect.EnumKind:
		return string(fd.Enum().Name())
	case protoreflect.BoolKind:
		return "bool"
	}
	return fd.Kind().String()
}

// TestSchemaMatchesProto keeps the dissector's copy of proto/tli.proto
// in step with the compiled one: every message, field number, name, type
// and enum value, both ways.
func TestSchemaMatchesProto(t *testing.T) {
	lua := readLuaSchema(t, "agentlab_tli.lua")
	want := map[string]protoreflect.MessageDescriptor{}
	var walk func(protoreflect.MessageDescriptors)
	walk = func(ms protoreflect.MessageDescriptors) {
		for i := range ms.Len() {
			md := ms.Get(i)
			want[string(md.Name())] = md
			walk(md.Messages()) // map entries: AgentConfig.ExtraEntry
		}
	}
	fd := tlipb.File_proto_tli_proto
	walk(fd.Messages())
	for name, md := range want {
		got, ok := lua.messages[name]
		if !ok {
			t.Errorf("message %s is not in agentlab_tli.lua's MESSAGES", name)
			continue
		}
		fields := md.Fields()
		for i := range fields.Len() {
			f := fields.Get(i)
			lf, ok := got[int32(f.Number())]
			if !ok {
				t.Errorf("%s.%s = %d is not in agentlab_tli.lua", name, f.Name(), f.Number())
				continue
			}
			w := luaField{name: string(f.Name()), typ: luaType(f), repeated: f.Cardinality() == protoreflect.Repeated, line: lf.line}
			if lf != w {
				t.Errorf("agentlab_tli.lua:%d: %s field %d is %+v, tli.proto says %+v", lf.line, name, f.Number(), lf, w)
			}
		}
		for num, lf := range got {
			if fields.ByNumber(protoreflect.FieldNumber(num)) == nil {
				t.Errorf("agentlab_tli.lua:%d: %s has a field %d (%s) that tli.proto does not", lf.line, name, num, lf.name)
			}
		}
	}
	for name := range lua.messages {
		if want[name] == nil {
			t.Errorf("agentlab_tli.lua has a message %s that tli.proto does not", name)
		}
	}
	enums := fd.Enums()
	if len(lua.enums) != enums.Len() {
		t.Errorf("agentlab_tli.lua has %d enums, tli.proto %d", len(lua.enums), enums.Len())
	}
	for i := range enums.Len() {
		ed := enums.Get(i)
		vals := ed.Values()
		want := map[int32]string{}
		for j := range vals.Len() {
			want[int32(vals.Get(j).Number())] = string(vals.Get(j).Name())
		}
		if got := lua.enums[string(ed.Name())]; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("enum %s: agentlab_tli.lua says %v, tli.proto %v", ed.Name(), got, want)
		}
	}
}
