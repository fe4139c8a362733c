package store

import (
	"slices"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		in      string
		addrs   []string
		db      int
		master  string
		cluster bool
		user    string
		pass    string
	}{
		{in: "redis://127.0.0.1:6379/0", addrs: []string{"127.0.0.1:6379"}},
		{in: "127.0.0.1:6380", addrs: []string{"127.0.0.1:6380"}},
		{in: "redis://:secret@h:1/3", addrs: []string{"h:1"}, db: 3, pass: "secret"},
		{in: "redis-cluster://a:7000,b:7001", addrs: []string{"a:7000", "b:7001"}, cluster: true},
		{in: "redis://a:7000,b:7001,c:7002", addrs: []string{"a:7000", "b:7001", "c:7002"}, cluster: true},
		{in: "redis-cluster://u:p@a:7000", addrs: []string{"a:7000"}, cluster: true, user: "u", pass: "p"},
		{in: "redis-sentinel://s1:26379,s2:26379/mymaster", addrs: []string{"s1:26379", "s2:26379"}, master: "mymaster"},
		{in: "redis-sentinel://:pw@s1:26379/mymaster/2", addrs: []string{"s1:26379"}, master: "mymaster", db: 2, pass: "pw"},
	}
	for _, tt := range tests {
		o, err := ParseURL(tt.in)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tt.in, err)
			continue
		}
		if !slices.Equal(o.Addrs, tt.addrs) || o.DB != tt.db || o.MasterName != tt.master ||
			o.IsClusterMode != tt.cluster || o.Username != tt.user || o.Password != tt.pass {
			t.Errorf("ParseURL(%q) = addrs %v db %d master %q cluster %v user %q pass %q", tt.in,
				o.Addrs, o.DB, o.MasterName, o.IsClusterMode, o.Username, o.Password)
		}
	}
	for _, bad := range []string{"", "redis-sentinel://s1:26379", "redis-cluster://a:7000/1", "redis://a:7000,nocolon", "redis://h:notaport/0"} {
		if _, err := ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) succeeded, want an error", bad)
		}
	}
}
