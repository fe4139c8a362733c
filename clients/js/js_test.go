package js

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/maple-farm/maple/box"
)

// TestConstantsMatchBox: maple.js carries the farm's wire constants as
// literals; they must be the ones package box exports (the gateway and
// the Go client use those).
func TestConstantsMatchBox(t *testing.T) {
	for _, c := range []struct {
		name, pattern string
		want          int32
	}{
		{"CMD_MOVE", `export const CMD_MOVE = (-?\d+);`, box.CmdMove},
		{"Ret.MOVED", `\n  MOVED: (-?\d+),`, box.RetMoved},
		{"Ret.BUSY", `\n  BUSY: (-?\d+),`, box.RetBusy},
		{"Ret.NO_ROUTE", `\n  NO_ROUTE: (-?\d+),`, box.RetNoRoute},
		{"Ret.HANDLER_FAILED", `\n  HANDLER_FAILED: (-?\d+),`, box.RetHandlerFailed},
		{"Ret.LOGIN_REQUIRED", `\n  LOGIN_REQUIRED: (-?\d+),`, box.RetLoginRequired},
		{"MAGIC", `export const MAGIC = (0x[0-9a-f]+);`, int32(box.Magic)},
	} {
		m := regexp.MustCompile(c.pattern).FindSubmatch(Source)
		if m == nil {
			t.Errorf("%s not found in maple.js", c.name)
			continue
		}
		got, err := strconv.ParseInt(string(m[1]), 0, 64)
		if err != nil || int32(got) != c.want {
			t.Errorf("maple.js %s = %s, want %d", c.name, m[1], c.want)
		}
	}
}
