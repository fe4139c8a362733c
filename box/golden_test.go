package box_test

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/maple-farm/maple/box"
)

// update rewrites the files under testdata/box (golden dumps and fuzz seeds)
// instead of comparing against them: go test ./box -update
var update = flag.Bool("update", false, "rewrite testdata/box/*.golden and *.bin")

// testdataDir is the module's shared testdata/box, seen from this package.
const testdataDir = "../testdata/box"

// goldenFrames are the demo game's frames (docs/protocol.md section 3). The wire
// is a contract: a change to any of these dumps is a breaking change.
var goldenFrames = []struct {
	name string
	cmd  int32
	ret  int32
	sn   uint32
	body string
}{
	{"echo_request", 1, box.RetOK, 1, "hi"},
	{"echo_reply", 1, box.RetOK, 1, "hi"},
	{"no_route_reply", 99, box.RetNoRoute, 2, ""},
	{"say_push", 6, box.RetOK, 0, "alice: hello"},
}

func TestGolden(t *testing.T) {
	for _, g := range goldenFrames {
		t.Run(g.name, func(t *testing.T) {
			frame := box.Append(nil, g.cmd, g.ret, g.sn, []byte(g.body))
			got := []byte(hex.Dump(frame))
			path := filepath.Join(testdataDir, g.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./box -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from Append(%d, %d, %d, %q):\ngot:\n%s\nwant:\n%s", path, g.cmd, g.ret, g.sn, g.body, got, want)
			}

			// The dump must also read back as the frame it describes.
			b, err := box.Decode(frame)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if b.Cmd != g.cmd || b.Ret != g.ret || b.SN != g.sn || string(b.Body) != g.body || b.Version != 0 || b.Flag != 0 {
				t.Errorf("Decode = %+v %q", b.Header, b.Body)
			}
		})
	}
}
